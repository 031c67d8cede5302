package main

import (
	"context"
	"fmt"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
)

// The user-facing roles of a real cluster, so that manifests which extend them (CRD
// installers shipping ClusterRoles labelled aggregate-to-view/edit/admin) can be tested
// as they behave there: a user bound to `edit` in a namespace gets what `edit` gives.
//
// kube-apiserver bootstraps view, edit and admin as aggregated ClusterRoles with no rules of
// their own, chained (view is aggregated into edit, edit into admin), and puts their base
// rules in system:aggregate-to-view, -edit and -admin; kube-controller-manager's
// clusterrole-aggregation controller then fills them in (here: rbac_aggregation.go). The
// base rules below are upstream's for the resources this server serves (storage.go), no
// more: reading everything non-secret for view; Secrets, ServiceAccounts (their tokens
// too), ConfigMaps, Services and workloads read and written for edit; Roles and
// RoleBindings for admin. Like upstream, none grants a status subresource's writes, and
// view does not read Secrets.

const (
	aggregateToView  = "rbac.authorization.k8s.io/aggregate-to-view"
	aggregateToEdit  = "rbac.authorization.k8s.io/aggregate-to-edit"
	aggregateToAdmin = "rbac.authorization.k8s.io/aggregate-to-admin"
	// The label kube-apiserver puts on every role it bootstraps.
	bootstrappingLabel = "kubernetes.io/bootstrapping"
)

var (
	readVerbs  = []string{"get", "list", "watch"}
	writeVerbs = []string{"create", "delete", "deletecollection", "patch", "update"}
)

func rule(verbs []string, group string, resources ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{Verbs: verbs, APIGroups: []string{group}, Resources: resources}
}

// aggregatedRole is a ClusterRole whose rules are those of the ClusterRoles labelled
// `selects`=true; it carries `labels` itself (to be aggregated further).
func aggregatedRole(name, selects string, labels ...string) rbacv1.ClusterRole {
	role := rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{bootstrappingLabel: "rbac-defaults"}},
		AggregationRule: &rbacv1.AggregationRule{ClusterRoleSelectors: []metav1.LabelSelector{
			{MatchLabels: map[string]string{selects: "true"}},
		}},
	}
	for _, l := range labels {
		role.Labels[l] = "true"
	}
	return role
}

// baseRole is a ClusterRole with rules, aggregated into the role selecting `label`.
func baseRole(name, label string, rules ...rbacv1.PolicyRule) rbacv1.ClusterRole {
	return rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			bootstrappingLabel: "rbac-defaults", label: "true",
		}},
		Rules: rules,
	}
}

// defaultClusterRoles is what this server bootstraps: the three user-facing roles and
// their base rules, as kube-apiserver names and labels them.
func defaultClusterRoles() []rbacv1.ClusterRole {
	return []rbacv1.ClusterRole{
		aggregatedRole("admin", aggregateToAdmin),
		aggregatedRole("edit", aggregateToEdit, aggregateToAdmin),
		aggregatedRole("view", aggregateToView, aggregateToEdit),
		baseRole("system:aggregate-to-admin", aggregateToAdmin,
			rule([]string{"get", "list", "watch", "create", "delete", "deletecollection", "patch", "update"},
				rbacv1.GroupName, "roles", "rolebindings"),
		),
		baseRole("system:aggregate-to-edit", aggregateToEdit,
			// Secrets are read by edit, never by view.
			rule(readVerbs, "", "secrets"),
			rule([]string{"impersonate"}, "", "serviceaccounts"),
			rule(writeVerbs, "", "serviceaccounts", "services", "configmaps", "secrets"),
			rule([]string{"create"}, "", "serviceaccounts/token"),
			rule(writeVerbs, "apps", "statefulsets", "statefulsets/scale", "daemonsets",
				"deployments", "deployments/scale", "deployments/rollback", "replicasets", "replicasets/scale"),
			rule(writeVerbs, "policy", "poddisruptionbudgets"),
			rule(writeVerbs, "networking.k8s.io", "networkpolicies"),
		),
		baseRole("system:aggregate-to-view", aggregateToView,
			rule(readVerbs, "", "serviceaccounts", "services", "services/status", "configmaps"),
			rule(readVerbs, "", "events", "namespaces/status"),
			// Reading its own Namespace object: a hint of which namespaces one may use.
			rule(readVerbs, "", "namespaces"),
			rule(readVerbs, "apps", "statefulsets", "statefulsets/status", "statefulsets/scale",
				"daemonsets", "daemonsets/status", "deployments", "deployments/status", "deployments/scale"),
			rule(readVerbs, "policy", "poddisruptionbudgets", "poddisruptionbudgets/status"),
			rule(readVerbs, "networking.k8s.io", "networkpolicies"),
		),
	}
}

// addRBACDefaults bootstraps the default ClusterRoles and runs their aggregation, both as
// post-start hooks of s (the first blocks /readyz until the roles exist). Registers the
// ClusterRole informer with f now, so that f's start (a post-start hook too) starts it.
func addRBACDefaults(s *genericapiserver.GenericAPIServer, f informers.SharedInformerFactory) error {
	aggregator := newClusterRoleAggregator(f.Rbac().V1().ClusterRoles())
	if err := s.AddPostStartHook("rbac-bootstrap-user-roles", createDefaultClusterRoles); err != nil {
		return err
	}
	return s.AddPostStartHook("clusterrole-aggregation", func(hook genericapiserver.PostStartHookContext) error {
		client, err := kubernetes.NewForConfig(hook.LoopbackClientConfig)
		if err != nil {
			return err
		}
		// Starting the factory again starts only the informers it has not started yet.
		f.Start(hook.Done())
		go aggregator.run(hook.Context, client.RbacV1())
		return nil
	})
}

// createDefaultClusterRoles creates the default roles that do not exist yet; existing ones
// are left as they are (an operator's edits stay, as after a kube-apiserver restart with
// the autoupdate annotation off).
func createDefaultClusterRoles(hook genericapiserver.PostStartHookContext) error {
	client, err := kubernetes.NewForConfig(hook.LoopbackClientConfig)
	if err != nil {
		return err
	}
	roles := defaultClusterRoles()
	// The server may not answer for its first few hundred milliseconds.
	err = wait.PollUntilContextTimeout(hook.Context, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		for i := range roles {
			_, err := client.RbacV1().ClusterRoles().Create(ctx, &roles[i], metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("creating the default ClusterRoles: %w", err)
	}
	return nil
}
