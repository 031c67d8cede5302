// Command test-apiserver is a Kubernetes API server for tests, assembled from the
// upstream apiserver libraries that Debian packages (k8s.io/apiserver,
// k8s.io/apiextensions-apiserver). It is not kube-apiserver: k8s.io/kubernetes is
// not packaged, so the built-in types it serves are registered here (storage.go)
// and the CRD machinery is the real apiextensions server, chained behind ours
// the way kube-apiserver chains it.
//
// Request flow: front server (this file: authn, authz, admission, the simple
// built-in types, discovery, OpenAPI) -> apiextensions server (CRDs and custom
// resources) -> 404.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"os"
	"time"

	"github.com/spf13/pflag"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1beta1"
	extapiserver "k8s.io/apiextensions-apiserver/pkg/apiserver"
	extoptions "k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	extopenapi "k8s.io/apiextensions-apiserver/pkg/generated/openapi"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle"
	"k8s.io/apiserver/pkg/endpoints/discovery/aggregated"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	netutils "k8s.io/utils/net"

	noopoteltrace "go.opentelemetry.io/otel/trace/noop"
)

// options are the command line of the server: the upstream option structs
// (etcd, serving, admission, run) plus three flags of its own.
type options struct {
	run           *genericoptions.ServerRunOptions
	etcd          *genericoptions.EtcdOptions
	serving       *genericoptions.SecureServingOptionsWithLoopback
	admission     *genericoptions.AdmissionOptions
	clientCAFile  string
	authorization string
	portFile      string
}

func newOptions() *options {
	o := &options{
		run:           genericoptions.NewServerRunOptions(),
		// One prefix for everything, as in kube-apiserver; the codec is set per server.
		etcd:          genericoptions.NewEtcdOptions(storagebackend.NewDefaultConfig("/registry", nil)),
		serving:       genericoptions.NewSecureServingOptions().WithLoopback(),
		admission:     genericoptions.NewAdmissionOptions(),
		authorization: authorizationAlwaysAllow,
	}
	// No garbage collector runs here: with GC handling on, a delete with
	// propagationPolicy=Foreground or Orphan would add a finalizer that nothing
	// ever removes. Off, such deletes behave like Background ones.
	o.etcd.EnableGarbageCollection = false
	o.serving.BindAddress = netutils.ParseIPSloppy("127.0.0.1")
	// What discovery documents advertise as the server's address.
	o.run.AdvertiseAddress = netutils.ParseIPSloppy("127.0.0.1")
	o.serving.BindPort = 0
	// NamespaceLifecycle only: the webhook and admission-policy plugins need
	// APIs (admissionregistration.k8s.io) this server does not serve.
	o.admission.Plugins = admission.NewPlugins()
	lifecycle.Register(o.admission.Plugins)
	o.admission.RecommendedPluginOrder = []string{lifecycle.PluginName}
	return o
}

func (o *options) addFlags(fs *pflag.FlagSet) {
	o.run.AddUniversalFlags(fs)
	o.etcd.AddFlags(fs)
	o.serving.AddFlags(fs)
	fs.StringVar(&o.clientCAFile, "client-ca-file", o.clientCAFile,
		"CA bundle that signs the client certificates accepted as identities (CN = user, O = groups).")
	fs.StringVar(&o.authorization, "authorization-mode", o.authorization,
		"Authorizer for users outside system:masters: AlwaysAllow, or RBAC (the stored Roles, ClusterRoles and bindings).")
	fs.StringVar(&o.portFile, "port-file", o.portFile,
		"With --secure-port=0: listen on a port the kernel picks and write its number to this file.")
}

func (o *options) validate() error {
	var errs []error
	errs = append(errs, o.run.Validate()...)
	errs = append(errs, o.etcd.Validate()...)
	errs = append(errs, o.serving.Validate()...)
	errs = append(errs, o.admission.Validate()...)
	if o.serving.BindPort == 0 && o.portFile == "" {
		errs = append(errs, fmt.Errorf("--secure-port=0 needs --port-file, to tell which port was chosen"))
	}
	if o.clientCAFile == "" {
		errs = append(errs, fmt.Errorf("--client-ca-file is required: every request must carry a client certificate"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid options: %v", errs)
	}
	return nil
}

// listenOnFreePort lets the kernel choose the port (--secure-port=0 with
// --port-file): no window in which another cluster could take a port chosen
// beforehand, so several clusters can start at once.
func (o *options) listenOnFreePort() error {
	if o.serving.BindPort != 0 || o.portFile == "" {
		return nil
	}
	address := net.JoinHostPort(o.serving.BindAddress.String(), "0")
	listener, port, err := genericoptions.CreateListener("tcp", address, net.ListenConfig{})
	if err != nil {
		return err
	}
	o.serving.Listener = listener
	// Written then renamed, so a reader never sees a partial number.
	tmp := o.portFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, o.portFile)
}

func main() {
	o := newOptions()
	fs := pflag.CommandLine
	klog.InitFlags(nil)
	fs.AddGoFlagSet(flag.CommandLine)
	o.addFlags(fs)
	pflag.Parse()

	if err := o.run.ComponentGlobalsRegistry.Set(); err != nil {
		klog.Fatal(err)
	}
	if err := o.run.Complete(); err != nil {
		klog.Fatal(err)
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := o.listenOnFreePort(); err != nil {
		fmt.Fprintln(os.Stderr, "test-apiserver:", err)
		os.Exit(1)
	}
	if err := run(genericapiserver.SetupSignalContext(), o); err != nil {
		fmt.Fprintln(os.Stderr, "test-apiserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options) error {
	front, err := newServers(o)
	if err != nil {
		return err
	}
	return front.PrepareRun().RunWithContext(ctx)
}

// newServers builds the apiextensions server and the front server that
// delegates to it, and returns the front one (which runs both).
func newServers(o *options) (*genericapiserver.GenericAPIServer, error) {
	frontConfig, err := newFrontConfig(o)
	if err != nil {
		return nil, err
	}
	extConfig, err := newExtensionsConfig(o, frontConfig)
	if err != nil {
		return nil, err
	}

	ext, err := extConfig.Complete().New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, fmt.Errorf("apiextensions server: %w", err)
	}
	front, err := frontConfig.Complete().New("test-apiserver", ext.GenericAPIServer)
	if err != nil {
		return nil, fmt.Errorf("front server: %w", err)
	}
	if err := installBuiltinAPIs(front, frontConfig.RESTOptionsGetter); err != nil {
		return nil, err
	}
	crdInformer := ext.Informers.Apiextensions().V1().CustomResourceDefinitions()
	if err := listCRDGroups(front, crdInformer); err != nil {
		return nil, err
	}
	if err := serveDelegateOpenAPI(front, ext.GenericAPIServer, crdInformer); err != nil {
		return nil, err
	}
	if err := front.AddPostStartHook("bootstrap-namespaces", createSystemNamespaces); err != nil {
		return nil, err
	}
	if err := addRBACDefaults(front, frontConfig.SharedInformerFactory); err != nil {
		return nil, err
	}
	return front, nil
}

// newFrontConfig applies the options the way RecommendedOptions.ApplyTo would,
// except that the core API client is our own loopback connection (there is no
// other kube-apiserver to talk to) and authentication/authorization are ours (auth.go).
func newFrontConfig(o *options) (*genericapiserver.RecommendedConfig, error) {
	c := genericapiserver.NewRecommendedConfig(Codecs)
	if err := o.run.ApplyTo(&c.Config); err != nil {
		return nil, err
	}
	if err := o.serving.ApplyTo(&c.SecureServing, &c.LoopbackClientConfig); err != nil {
		return nil, fmt.Errorf("serving: %w", err)
	}

	etcd := *o.etcd
	etcd.StorageConfig.Codec = storageCodec()
	if err := etcd.ApplyTo(&c.Config); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}

	// Informers, the authorizer and admission read this server's own API over
	// loopback (its bearer token, made by serving.ApplyTo, is accepted by applyAuth).
	c.ClientConfig = c.LoopbackClientConfig
	client, err := kubernetes.NewForConfig(c.LoopbackClientConfig)
	if err != nil {
		return nil, err
	}
	dynamicClient, err := dynamic.NewForConfig(c.LoopbackClientConfig)
	if err != nil {
		return nil, err
	}
	c.SharedInformerFactory = informers.NewSharedInformerFactory(client, 10*time.Minute)

	if err := applyAuth(&c.Config, o.clientCAFile, o.authorization, c.SharedInformerFactory); err != nil {
		return nil, err
	}
	if err := serveServiceAccountTokens(&c.Config, client); err != nil {
		return nil, err
	}
	if err := o.admission.ApplyTo(&c.Config, c.SharedInformerFactory, client, dynamicClient,
		c.FeatureGate, c.EffectiveVersion); err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}

	c.OpenAPIConfig, c.OpenAPIV3Config = openAPIConfigs()
	// One aggregated-discovery document for both servers: each adds its groups to it.
	c.AggregatedDiscoveryGroupManager = aggregated.NewResourceManager("apis")
	return c, nil
}

// newExtensionsConfig derives the apiextensions server's config from the front
// one (shared serving, auth, admission, informers, lifecycle), changing only what
// is particular to it, as kube-apiserver's CreateAPIExtensionsConfig does.
func newExtensionsConfig(o *options, front *genericapiserver.RecommendedConfig) (*extapiserver.Config, error) {
	generic := front.Config // shallow copy
	generic.Serializer = extapiserver.Codecs
	generic.MergedResourceConfig = extapiserver.DefaultAPIResourceConfigSource()
	// Hooks registered on the front config must not be registered twice.
	generic.PostStartHooks = map[string]genericapiserver.PostStartHookConfigEntry{}

	etcd := *o.etcd
	etcd.StorageConfig.Codec = extapiserver.Codecs.LegacyCodec(v1beta1.SchemeGroupVersion, apiextensionsv1.SchemeGroupVersion)
	generic.RESTOptionsGetter = etcd.CreateRESTOptionsGetter(
		&genericoptions.SimpleStorageFactory{StorageConfig: etcd.StorageConfig}, generic.ResourceTransformers)

	// The front server serves /openapi; this server still needs its own
	// definitions, to build the managed-fields models of CRD objects.
	generic.OpenAPIConfig = nil
	generic.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(extopenapi.GetOpenAPIDefinitions, definitionNamer())
	generic.SkipOpenAPIInstallation = true

	return &extapiserver.Config{
		GenericConfig: &genericapiserver.RecommendedConfig{
			Config:                generic,
			SharedInformerFactory: front.SharedInformerFactory,
			ClientConfig:          front.ClientConfig,
		},
		ExtraConfig: extapiserver.ExtraConfig{
			CRDRESTOptionsGetter: extoptions.NewCRDRESTOptionsGetter(etcd, generic.ResourceTransformers, generic.StorageObjectCountTracker),
			MasterCount:          1,
			// Conversion webhooks cannot reach a Service here (no endpoints, no
			// network); the resolver only satisfies the interface.
			ServiceResolver:     noServiceResolver{},
			AuthResolverWrapper: webhook.NewDefaultAuthenticationInfoResolverWrapper(nil, nil, front.LoopbackClientConfig, noopoteltrace.NewTracerProvider()),
		},
	}, nil
}

// noServiceResolver is the ServiceResolver of CRD conversion webhooks: this
// server runs no workloads, so no Service has anything behind it.
type noServiceResolver struct{}

func (noServiceResolver) ResolveEndpoint(namespace, name string, _ int32) (*url.URL, error) {
	return nil, fmt.Errorf("service %s/%s: webhooks are not supported by this test server (no workloads run)", namespace, name)
}
