package main

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// resource is one served built-in resource: a generic etcd-backed store with
// the type's rules (types.go).
type resource struct {
	gv         schema.GroupVersion
	plural     string
	singular   string
	namespaced bool
	shortNames []string
	categories []string
	newObj     func() runtime.Object
	newList    func() runtime.Object
	rules      typeRules
}

// builtinResources is what a typical operator and its deploy manifests touch.
// core/v1 Events and events.k8s.io/v1 Events are one collection, as in
// kube-apiserver: both stores hold corev1.Event under one etcd prefix, and
// events.k8s.io/v1 requests are converted (events.go).
var builtinResources = []resource{
	{corev1.SchemeGroupVersion, "namespaces", "namespace", false, []string{"ns"}, nil,
		func() runtime.Object { return &corev1.Namespace{} }, func() runtime.Object { return &corev1.NamespaceList{} }, namespaceRules},
	{corev1.SchemeGroupVersion, "secrets", "secret", true, nil, nil,
		func() runtime.Object { return &corev1.Secret{} }, func() runtime.Object { return &corev1.SecretList{} }, secretRules},
	{corev1.SchemeGroupVersion, "configmaps", "configmap", true, []string{"cm"}, nil,
		func() runtime.Object { return &corev1.ConfigMap{} }, func() runtime.Object { return &corev1.ConfigMapList{} }, configMapRules},
	{corev1.SchemeGroupVersion, "serviceaccounts", "serviceaccount", true, []string{"sa"}, nil,
		func() runtime.Object { return &corev1.ServiceAccount{} }, func() runtime.Object { return &corev1.ServiceAccountList{} }, plainRules},
	{corev1.SchemeGroupVersion, "services", "service", true, []string{"svc"}, []string{"all"},
		func() runtime.Object { return &corev1.Service{} }, func() runtime.Object { return &corev1.ServiceList{} }, serviceRules},
	{corev1.SchemeGroupVersion, "events", "event", true, []string{"ev"}, nil,
		func() runtime.Object { return &corev1.Event{} }, func() runtime.Object { return &corev1.EventList{} }, eventRules},
	{eventsv1.SchemeGroupVersion, "events", "event", true, []string{"ev"}, nil,
		func() runtime.Object { return &corev1.Event{} }, func() runtime.Object { return &corev1.EventList{} }, eventRules},
	{coordinationv1.SchemeGroupVersion, "leases", "lease", true, nil, nil,
		func() runtime.Object { return &coordinationv1.Lease{} }, func() runtime.Object { return &coordinationv1.LeaseList{} }, plainRules},
	{appsv1.SchemeGroupVersion, "deployments", "deployment", true, []string{"deploy"}, []string{"all"},
		func() runtime.Object { return &appsv1.Deployment{} }, func() runtime.Object { return &appsv1.DeploymentList{} }, deploymentRules},
	{appsv1.SchemeGroupVersion, "statefulsets", "statefulset", true, []string{"sts"}, []string{"all"},
		func() runtime.Object { return &appsv1.StatefulSet{} }, func() runtime.Object { return &appsv1.StatefulSetList{} }, workloadRules},
	{appsv1.SchemeGroupVersion, "daemonsets", "daemonset", true, []string{"ds"}, []string{"all"},
		func() runtime.Object { return &appsv1.DaemonSet{} }, func() runtime.Object { return &appsv1.DaemonSetList{} }, workloadRules},
	{rbacv1.SchemeGroupVersion, "roles", "role", true, nil, nil,
		func() runtime.Object { return &rbacv1.Role{} }, func() runtime.Object { return &rbacv1.RoleList{} }, rbacRules},
	{rbacv1.SchemeGroupVersion, "rolebindings", "rolebinding", true, nil, nil,
		func() runtime.Object { return &rbacv1.RoleBinding{} }, func() runtime.Object { return &rbacv1.RoleBindingList{} }, rbacRules},
	{rbacv1.SchemeGroupVersion, "clusterroles", "clusterrole", false, nil, nil,
		func() runtime.Object { return &rbacv1.ClusterRole{} }, func() runtime.Object { return &rbacv1.ClusterRoleList{} }, rbacRules},
	{rbacv1.SchemeGroupVersion, "clusterrolebindings", "clusterrolebinding", false, nil, nil,
		func() runtime.Object { return &rbacv1.ClusterRoleBinding{} }, func() runtime.Object { return &rbacv1.ClusterRoleBindingList{} }, rbacRules},
	// What the Helm chart renders besides the above (stored and served, never enforced).
	{policyv1.SchemeGroupVersion, "poddisruptionbudgets", "poddisruptionbudget", true, []string{"pdb"}, nil,
		func() runtime.Object { return &policyv1.PodDisruptionBudget{} }, func() runtime.Object { return &policyv1.PodDisruptionBudgetList{} }, typeRules{hasStatus: true, tracksGeneration: true}},
	{networkingv1.SchemeGroupVersion, "networkpolicies", "networkpolicy", true, []string{"netpol"}, nil,
		func() runtime.Object { return &networkingv1.NetworkPolicy{} }, func() runtime.Object { return &networkingv1.NetworkPolicyList{} }, plainRules},
}

// installBuiltinAPIs installs builtinResources on s: core/v1 under /api, the
// other groups under /apis.
func installBuiltinAPIs(s *genericapiserver.GenericAPIServer, options generic.RESTOptionsGetter) error {
	options = cohabitingEvents{options}
	groups := map[string]*genericapiserver.APIGroupInfo{}
	var groupOrder []string
	for _, r := range builtinResources {
		info, ok := groups[r.gv.Group]
		if !ok {
			newInfo := genericapiserver.NewDefaultAPIGroupInfo(r.gv.Group, Scheme, metav1.ParameterCodec, Codecs)
			info = &newInfo
			groups[r.gv.Group] = info
			groupOrder = append(groupOrder, r.gv.Group)
		}
		storage := info.VersionedResourcesStorageMap[r.gv.Version]
		if storage == nil {
			storage = map[string]rest.Storage{}
			info.VersionedResourcesStorageMap[r.gv.Version] = storage
		}
		main, status, err := newStorage(r, options)
		if err != nil {
			return fmt.Errorf("storage for %s: %w", r.plural, err)
		}
		storage[r.plural] = main
		if status != nil {
			storage[r.plural+"/status"] = status
		}
	}

	if err := s.InstallLegacyAPIGroup(genericapiserver.DefaultLegacyAPIPrefix, groups[""]); err != nil {
		return fmt.Errorf("installing core/v1: %w", err)
	}
	var named []*genericapiserver.APIGroupInfo
	for _, group := range groupOrder {
		if group != "" {
			named = append(named, groups[group])
		}
	}
	if err := s.InstallAPIGroups(named...); err != nil {
		return fmt.Errorf("installing API groups: %w", err)
	}
	return nil
}

// newStorage returns the store of r and, for types with a status, the store
// of its /status subresource.
func newStorage(r resource, options generic.RESTOptionsGetter) (rest.Storage, rest.Storage, error) {
	s := newStrategy(r.namespaced, r.gv.String(), r.rules)
	qualified := r.gv.WithResource(r.plural).GroupResource()
	store := &genericregistry.Store{
		NewFunc:                   r.newObj,
		NewListFunc:               r.newList,
		DefaultQualifiedResource:  qualified,
		SingularQualifiedResource: r.gv.WithResource(r.singular).GroupResource(),
		CreateStrategy:            s,
		UpdateStrategy:            s,
		DeleteStrategy:            s,
		ResetFieldsStrategy:       s,
		TableConvertor:            r.rules.table,
	}
	if store.TableConvertor == nil {
		store.TableConvertor = rest.NewDefaultTableConvertor(qualified)
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: options, AttrFunc: r.rules.attrs}); err != nil {
		return nil, nil, err
	}
	main := &namedStore{Store: store, shortNames: r.shortNames, categories: r.categories}
	if !r.rules.hasStatus {
		return main, nil, nil
	}
	statusStore := *store
	statusStore.UpdateStrategy = statusStrategy{s}
	statusStore.ResetFieldsStrategy = statusStrategy{s}
	return main, &statusREST{store: &statusStore}, nil
}

// namedStore adds the short names and categories kubectl resolves ("ns", "all").
type namedStore struct {
	*genericregistry.Store
	shortNames []string
	categories []string
}

func (s *namedStore) ShortNames() []string { return s.shortNames }
func (s *namedStore) Categories() []string { return s.categories }

// statusREST serves get/update/patch of the /status subresource only.
type statusREST struct {
	store *genericregistry.Store
}

func (r *statusREST) New() runtime.Object { return r.store.New() }

// Destroy does nothing: the storage is shared with, and destroyed by, the main store.
func (r *statusREST) Destroy() {}

func (r *statusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, options)
}

func (r *statusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc,
	updateValidation rest.ValidateObjectUpdateFunc, _ bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	// Never create through /status.
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}

func (r *statusREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}

func (r *statusREST) ConvertToTable(ctx context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	return r.store.ConvertToTable(ctx, object, tableOptions)
}

// systemNamespaces exist in every cluster; clients and manifests assume them.
var systemNamespaces = []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease}

// createSystemNamespaces is a post-start hook: /readyz fails until it is done.
func createSystemNamespaces(hook genericapiserver.PostStartHookContext) error {
	client, err := kubernetes.NewForConfig(hook.LoopbackClientConfig)
	if err != nil {
		return err
	}
	// The server may not answer for its first few hundred milliseconds.
	return wait.PollUntilContextTimeout(hook.Context, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, name := range systemNamespaces {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
			_, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return false, nil
			}
		}
		return true, nil
	})
}
