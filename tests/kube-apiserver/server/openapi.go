package main

import (
	"fmt"

	restful "github.com/emicklei/go-restful/v3"

	extapiserver "k8s.io/apiextensions-apiserver/pkg/apiserver"
	extinformers "k8s.io/apiextensions-apiserver/pkg/client/informers/externalversions/apiextensions/v1"
	openapicontroller "k8s.io/apiextensions-apiserver/pkg/controller/openapi"
	openapiv3controller "k8s.io/apiextensions-apiserver/pkg/controller/openapiv3"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	openapiutil "k8s.io/apiserver/pkg/util/openapi"
	"k8s.io/component-base/version"
	"k8s.io/kube-openapi/pkg/builder"
	"k8s.io/kube-openapi/pkg/builder3"
	openapicommon "k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/common/restfuladapter"

	// Generated at build time by openapi-gen (see ../cluster) over the k8s.io/api
	// packages served here, apimachinery and apiextensions/v1.
	generatedopenapi "testapiserver/openapi"
)

// Server-side apply needs an OpenAPI schema for every served type: the
// managed-fields type converter is built from these definitions, and /openapi
// v2/v3 serve them to clients (kubectl explain, client-side apply).

func openAPIConfigs() (*openapicommon.Config, *openapicommon.OpenAPIV3Config) {
	definitions := openapiutil.GetOpenAPIDefinitionsWithoutDisabledFeatures(generatedopenapi.GetOpenAPIDefinitions)
	v2 := genericapiserver.DefaultOpenAPIConfig(definitions, definitionNamer())
	v2.Info.Title = "Kubernetes"
	v2.Info.Version = version.Get().GitVersion
	v3 := genericapiserver.DefaultOpenAPIV3Config(definitions, definitionNamer())
	v3.Info.Title = "Kubernetes"
	v3.Info.Version = version.Get().GitVersion
	return v2, v3
}

// definitionNamer names definitions and tags them with their group/version/kind,
// for the types of both servers.
func definitionNamer() *openapinamer.DefinitionNamer {
	return openapinamer.NewDefinitionNamer(Scheme, extapiserver.Scheme)
}

// serveDelegateOpenAPI makes the front server's /openapi/v2 and /openapi/v3
// cover what the apiextensions server serves too: its own group and every
// CRD's schema. kube-apiserver gets this from its aggregator, which merges the
// specs of the servers behind it; here the front server serves them itself.
func serveDelegateOpenAPI(front *genericapiserver.GenericAPIServer, ext *genericapiserver.GenericAPIServer,
	crds extinformers.CustomResourceDefinitionInformer) error {
	v2Config, v3Config := openAPIConfigs()
	// Created now so that their informer handlers exist before informers start.
	crdV2 := openapicontroller.NewController(crds)
	crdV3 := openapiv3controller.NewController(crds)

	return front.AddPostStartHook("openapi-of-apiextensions", func(hook genericapiserver.PostStartHookContext) error {
		// PrepareRun has built the front server's specs by now.
		webServices := ext.Handler.GoRestfulContainer.RegisteredWebServices()
		for _, ws := range webServices {
			spec, err := builder3.BuildOpenAPISpecFromRoutes(restfuladapter.AdaptWebServices([]*restful.WebService{ws}), v3Config)
			if err != nil {
				return fmt.Errorf("OpenAPI v3 of %s: %w", ws.RootPath(), err)
			}
			front.OpenAPIV3VersionedService.UpdateGroupVersion(ws.RootPath()[1:], spec)
		}

		spec, err := builder.BuildOpenAPISpecFromRoutes(restfuladapter.AdaptWebServices(webServices), v2Config)
		if err != nil {
			return fmt.Errorf("OpenAPI v2 of apiextensions: %w", err)
		}
		static := front.StaticOpenAPISpec
		for path, item := range spec.Paths.Paths {
			static.Paths.Paths[path] = item
		}
		for name, schema := range spec.Definitions {
			if _, exists := static.Definitions[name]; !exists {
				static.Definitions[name] = schema
			}
		}
		if err := front.OpenAPIVersionedService.UpdateSpec(static); err != nil {
			return err
		}

		// These merge each CRD's schema into the specs above as CRDs come and go.
		go crdV2.Run(static, front.OpenAPIVersionedService, hook.Done())
		go crdV3.Run(front.OpenAPIV3VersionedService, hook.Done())
		return nil
	})
}
