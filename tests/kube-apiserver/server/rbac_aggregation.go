package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	rbacinformers "k8s.io/client-go/informers/rbac/v1"
	rbacclient "k8s.io/client-go/kubernetes/typed/rbac/v1"
	rbaclisters "k8s.io/client-go/listers/rbac/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// clusterRoleAggregator does what kube-controller-manager's clusterrole-aggregation
// controller does (k8s.io/kubernetes is not packaged): the rules of a ClusterRole with an
// aggregationRule are, and are kept, the union of the rules of the other ClusterRoles its
// selectors match — taken in name order, each distinct rule once. Chains (view into edit
// into admin) settle in a few rounds, since any ClusterRole's change looks at every
// aggregated one again. The RBAC authorizer (rbac.go) then reads the filled-in rules like
// any others, as kube-apiserver's does.
type clusterRoleAggregator struct {
	lister rbaclisters.ClusterRoleLister
	synced cache.InformerSynced
	// Names of aggregated ClusterRoles to bring up to date.
	queue workqueue.TypedRateLimitingInterface[string]
}

func newClusterRoleAggregator(informer rbacinformers.ClusterRoleInformer) *clusterRoleAggregator {
	a := &clusterRoleAggregator{
		lister: informer.Lister(),
		synced: informer.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "clusterrole-aggregation"},
		),
	}
	// Which aggregated roles a change affects is not known without evaluating every
	// selector, and ClusterRoles are few: any change queues all aggregated ones.
	queueAll := func() { a.queueAggregated() }
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { queueAll() },
		UpdateFunc: func(any, any) { queueAll() },
		DeleteFunc: func(any) { queueAll() },
	})
	utilruntime.Must(err)
	return a
}

func (a *clusterRoleAggregator) queueAggregated() {
	roles, err := a.lister.List(labels.Everything())
	if err != nil {
		utilruntime.HandleError(fmt.Errorf("listing ClusterRoles: %w", err))
		return
	}
	for _, role := range roles {
		if role.AggregationRule != nil {
			a.queue.Add(role.Name)
		}
	}
}

// run works the queue until ctx ends; a failed update is retried with backoff.
func (a *clusterRoleAggregator) run(ctx context.Context, client rbacclient.ClusterRolesGetter) {
	defer utilruntime.HandleCrash()
	go func() {
		<-ctx.Done()
		a.queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), a.synced) {
		return
	}
	// Roles that existed before the informer's handler ran were queued by its initial
	// list; this covers a restart of the server with nothing changing afterwards.
	a.queueAggregated()
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		for a.next(ctx, client) {
		}
	}, time.Second)
}

func (a *clusterRoleAggregator) next(ctx context.Context, client rbacclient.ClusterRolesGetter) bool {
	name, shutdown := a.queue.Get()
	if shutdown {
		return false
	}
	defer a.queue.Done(name)
	if err := a.sync(ctx, client, name); err != nil {
		klog.Warningf("aggregating ClusterRole %q: %v", name, err)
		a.queue.AddRateLimited(name)
		return true
	}
	a.queue.Forget(name)
	return true
}

// sync writes the aggregated rules of ClusterRole name, when they differ from its rules.
func (a *clusterRoleAggregator) sync(ctx context.Context, client rbacclient.ClusterRolesGetter, name string) error {
	role, err := a.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if role.AggregationRule == nil {
		return nil
	}
	rules, err := a.aggregatedRules(role)
	if err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(rules, role.Rules) {
		return nil
	}
	updated := role.DeepCopy()
	updated.Rules = rules
	// A conflict means the role changed meanwhile: its event queues it again.
	_, err = client.ClusterRoles().Update(ctx, updated, metav1.UpdateOptions{FieldManager: "clusterrole-aggregation-controller"})
	if apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// aggregatedRules is the union of the rules of the ClusterRoles (other than role) that
// role's selectors match: selector by selector, matched roles in name order, a rule only
// where no equal one came before. Never nil, so that "no rules" compares equal to a role
// stored without any.
func (a *clusterRoleAggregator) aggregatedRules(role *rbacv1.ClusterRole) ([]rbacv1.PolicyRule, error) {
	rules := []rbacv1.PolicyRule{}
	for i := range role.AggregationRule.ClusterRoleSelectors {
		selector, err := metav1.LabelSelectorAsSelector(&role.AggregationRule.ClusterRoleSelectors[i])
		if err != nil {
			return nil, fmt.Errorf("aggregationRule selector %d: %w", i, err)
		}
		matched, err := a.lister.List(selector)
		if err != nil {
			return nil, err
		}
		sort.Slice(matched, func(x, y int) bool { return matched[x].Name < matched[y].Name })
		for _, source := range matched {
			if source.Name == role.Name {
				continue
			}
			for _, r := range source.Rules {
				if !containsRule(rules, r) {
					rules = append(rules, r)
				}
			}
		}
	}
	return rules, nil
}

func containsRule(rules []rbacv1.PolicyRule, r rbacv1.PolicyRule) bool {
	for i := range rules {
		if equality.Semantic.DeepEqual(rules[i], r) {
			return true
		}
	}
	return false
}
