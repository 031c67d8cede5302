package main

import (
	"sort"
	"sync"

	apiextensionshelpers "k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	extinformers "k8s.io/apiextensions-apiserver/pkg/client/informers/externalversions/apiextensions/v1"
	extlisters "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/endpoints/discovery"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// The aggregated discovery document (/apis with the aggregated Accept type)
// is shared by both servers, so it already lists CRD groups. The plain /apis
// group list is the front server's own: it lists only the groups installed on
// it. kube-apiserver's aggregator adds the apiextensions group and every CRD
// group to it (one APIService each); listCRDGroups does that here. Clients that
// do not ask for aggregated discovery (older kubectl, many kube-rs paths) read
// the plain list. /apis/<group> and /apis/<group>/<version> fall through to the
// apiextensions server, which answers them itself.
func listCRDGroups(front *genericapiserver.GenericAPIServer, crds extinformers.CustomResourceDefinitionInformer) error {
	v1 := metav1.GroupVersionForDiscovery{GroupVersion: apiextensionsv1.SchemeGroupVersion.String(), Version: "v1"}
	front.DiscoveryGroupManager.AddGroup(metav1.APIGroup{
		Name:             apiextensionsv1.GroupName,
		Versions:         []metav1.GroupVersionForDiscovery{v1},
		PreferredVersion: v1,
	})

	builtin := map[string]bool{apiextensionsv1.GroupName: true}
	for _, g := range servedGroupVersions {
		builtin[g.gv.Group] = true
	}
	l := &crdGroupLister{groups: front.DiscoveryGroupManager, crds: crds.Lister(), builtin: builtin, listed: map[string]bool{}}
	_, err := crds.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { l.sync() },
		UpdateFunc: func(any, any) { l.sync() },
		DeleteFunc: func(any) { l.sync() },
	})
	return err
}

// crdGroupLister keeps the plain /apis list equal to the groups of the
// established CRDs (plus the built-in groups, which it never touches).
type crdGroupLister struct {
	groups  discovery.GroupManager
	crds    extlisters.CustomResourceDefinitionLister
	builtin map[string]bool

	mu     sync.Mutex
	listed map[string]bool // CRD groups currently in the list
}

// sync recomputes every CRD group from the informer's cache: with the few
// CRDs of a test cluster that is cheaper to get right than incremental updates.
func (l *crdGroupLister) sync() {
	l.mu.Lock()
	defer l.mu.Unlock()

	crds, err := l.crds.List(labels.Everything())
	if err != nil {
		klog.ErrorS(err, "listing CRDs for discovery")
		return
	}
	versions := map[string]map[string]bool{} // group -> served versions
	for _, crd := range crds {
		if l.builtin[crd.Spec.Group] || !apiextensionshelpers.IsCRDConditionTrue(crd, apiextensionsv1.Established) {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served {
				continue
			}
			if versions[crd.Spec.Group] == nil {
				versions[crd.Spec.Group] = map[string]bool{}
			}
			versions[crd.Spec.Group][v.Name] = true
		}
	}

	for group, served := range versions {
		l.groups.AddGroup(apiGroup(group, served))
		l.listed[group] = true
	}
	for group := range l.listed {
		if _, still := versions[group]; !still {
			l.groups.RemoveGroup(group)
			delete(l.listed, group)
		}
	}
}

// apiGroup lists the versions by Kubernetes version priority (v2 > v1 >
// v1beta1); the first is the preferred one, as the apiextensions server says too.
func apiGroup(group string, served map[string]bool) metav1.APIGroup {
	names := make([]string, 0, len(served))
	for name := range served {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		return version.CompareKubeAwareVersionStrings(names[i], names[j]) > 0
	})
	versions := make([]metav1.GroupVersionForDiscovery, 0, len(names))
	for _, name := range names {
		versions = append(versions, metav1.GroupVersionForDiscovery{GroupVersion: group + "/" + name, Version: name})
	}
	return metav1.APIGroup{Name: group, Versions: versions, PreferredVersion: versions[0]}
}
