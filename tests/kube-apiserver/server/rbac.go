package main

import (
	"context"
	"fmt"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/informers"
	rbaclisters "k8s.io/client-go/listers/rbac/v1"
	"k8s.io/client-go/tools/cache"
)

// authorizationRBAC evaluates the rbac.authorization.k8s.io/v1 objects this
// server stores, as kube-apiserver's RBAC authorizer does.
const authorizationRBAC = "RBAC"

// rbacAuthorizer decides like kube-apiserver's RBAC authorizer
// (k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac, which Debian does not
// package), reading Roles, ClusterRoles and their bindings from the shared
// informers: a request is allowed when a rule of a role bound to its user or
// one of its groups matches it, and gets no opinion otherwise (so a 403, as
// nothing after RBAC allows). An aggregated ClusterRole counts with the rules
// stored in it, which rbac_aggregation.go keeps filled in as
// kube-controller-manager does; of the default roles, only view, edit and admin
// exist (rbac_defaults.go). What it does not do: the other default roles and
// bindings (system:discovery, system:basic-user, ...), and the escalation
// checks on writes of RBAC objects (admission-like registry checks upstream).
type rbacAuthorizer struct {
	roles               rbaclisters.RoleLister
	roleBindings        rbaclisters.RoleBindingLister
	clusterRoles        rbaclisters.ClusterRoleLister
	clusterRoleBindings rbaclisters.ClusterRoleBindingLister
	synced              []cache.InformerSynced
}

// newRBACAuthorizer registers the four RBAC informers with f; they start with
// f (the generic server's post-start hook).
func newRBACAuthorizer(f informers.SharedInformerFactory) *rbacAuthorizer {
	v1 := f.Rbac().V1()
	return &rbacAuthorizer{
		roles:               v1.Roles().Lister(),
		roleBindings:        v1.RoleBindings().Lister(),
		clusterRoles:        v1.ClusterRoles().Lister(),
		clusterRoleBindings: v1.ClusterRoleBindings().Lister(),
		synced: []cache.InformerSynced{
			v1.Roles().Informer().HasSynced, v1.RoleBindings().Informer().HasSynced,
			v1.ClusterRoles().Informer().HasSynced, v1.ClusterRoleBindings().Informer().HasSynced,
		},
	}
}

// waitForCaches is a post-start hook: /readyz fails until the authorizer has
// seen every stored RBAC object, so a ready server never refuses a request
// its objects allow merely because it has not read them yet.
func (a *rbacAuthorizer) waitForCaches(hook genericapiserver.PostStartHookContext) error {
	if !cache.WaitForCacheSync(hook.Done(), a.synced...) {
		return fmt.Errorf("RBAC informers did not sync")
	}
	return nil
}

func (a *rbacAuthorizer) Authorize(_ context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	u := attrs.GetUser()
	if u == nil {
		return authorizer.DecisionNoOpinion, "RBAC: no user", nil
	}
	var errs []error
	// ClusterRoleBindings grant their ClusterRole's rules everywhere.
	clusterBindings, err := a.clusterRoleBindings.List(labels.Everything())
	if err != nil {
		errs = append(errs, err)
	}
	for _, b := range clusterBindings {
		if !bindsUser(u, b.Subjects, "") {
			continue
		}
		rules, err := a.rulesOf(b.RoleRef, "")
		if err != nil {
			errs = append(errs, fmt.Errorf("ClusterRoleBinding %q: %w", b.Name, err))
			continue
		}
		if anyRuleAllows(attrs, rules) {
			return authorizer.DecisionAllow, fmt.Sprintf("RBAC: allowed by ClusterRoleBinding %q of %s %q to %s",
				b.Name, b.RoleRef.Kind, b.RoleRef.Name, u.GetName()), nil
		}
	}
	// RoleBindings grant their Role's or ClusterRole's rules in their namespace
	// only; requests across all namespaces (namespace "") match none.
	if ns := attrs.GetNamespace(); ns != "" {
		bindings, err := a.roleBindings.RoleBindings(ns).List(labels.Everything())
		if err != nil {
			errs = append(errs, err)
		}
		for _, b := range bindings {
			if !bindsUser(u, b.Subjects, ns) {
				continue
			}
			rules, err := a.rulesOf(b.RoleRef, ns)
			if err != nil {
				errs = append(errs, fmt.Errorf("RoleBinding %s/%s: %w", ns, b.Name, err))
				continue
			}
			if anyRuleAllows(attrs, rules) {
				return authorizer.DecisionAllow, fmt.Sprintf("RBAC: allowed by RoleBinding %s/%s of %s %q to %s",
					ns, b.Name, b.RoleRef.Kind, b.RoleRef.Name, u.GetName()), nil
			}
		}
	}
	reason := ""
	if len(errs) > 0 {
		reason = fmt.Sprintf("RBAC: %v", utilerrors.NewAggregate(errs))
	}
	return authorizer.DecisionNoOpinion, reason, nil
}

// rulesOf returns the rules of the role a binding in namespace refers to (a
// Role there, or a ClusterRole). A missing role is an error, reported in the
// denial's reason, as upstream does.
func (a *rbacAuthorizer) rulesOf(ref rbacv1.RoleRef, namespace string) ([]rbacv1.PolicyRule, error) {
	switch {
	case ref.Kind == "ClusterRole":
		role, err := a.clusterRoles.Get(ref.Name)
		if err != nil {
			return nil, err
		}
		return role.Rules, nil
	case ref.Kind == "Role" && namespace != "":
		role, err := a.roles.Roles(namespace).Get(ref.Name)
		if err != nil {
			return nil, err
		}
		return role.Rules, nil
	default:
		return nil, fmt.Errorf("unsupported role reference kind: %q", ref.Kind)
	}
}

// bindsUser: whether one of the subjects is u, a group of u's, or u's service
// account. A ServiceAccount subject without a namespace means the binding's.
func bindsUser(u user.Info, subjects []rbacv1.Subject, bindingNamespace string) bool {
	for _, s := range subjects {
		switch s.Kind {
		case rbacv1.UserKind:
			if u.GetName() == s.Name {
				return true
			}
		case rbacv1.GroupKind:
			for _, g := range u.GetGroups() {
				if g == s.Name {
					return true
				}
			}
		case rbacv1.ServiceAccountKind:
			ns := bindingNamespace
			if s.Namespace != "" {
				ns = s.Namespace
			}
			if ns != "" && serviceaccount.MatchesUsername(ns, s.Name, u.GetName()) {
				return true
			}
		}
	}
	return false
}

func anyRuleAllows(attrs authorizer.Attributes, rules []rbacv1.PolicyRule) bool {
	for i := range rules {
		if ruleAllows(attrs, &rules[i]) {
			return true
		}
	}
	return false
}

// ruleAllows is upstream's RuleAllows: a resource request must match verb,
// API group, resource (a subresource as "resource/sub", or "*/sub") and, when
// the rule lists any, the object's name; a non-resource request must match
// verb and URL ("/path" exactly, "/prefix*", or "*").
func ruleAllows(attrs authorizer.Attributes, rule *rbacv1.PolicyRule) bool {
	if !matches(rule.Verbs, attrs.GetVerb()) {
		return false
	}
	if !attrs.IsResourceRequest() {
		return nonResourceURLMatches(rule.NonResourceURLs, attrs.GetPath())
	}
	resource, sub := attrs.GetResource(), attrs.GetSubresource()
	if sub != "" {
		resource += "/" + sub
	}
	return matches(rule.APIGroups, attrs.GetAPIGroup()) &&
		resourceMatches(rule.Resources, resource, sub) &&
		(len(rule.ResourceNames) == 0 || contains(rule.ResourceNames, attrs.GetName()))
}

// matches: the list holds the value or "*".
func matches(list []string, value string) bool {
	return contains(list, rbacv1.ResourceAll) || contains(list, value)
}

func resourceMatches(ruleResources []string, resource, sub string) bool {
	for _, r := range ruleResources {
		if r == rbacv1.ResourceAll || r == resource {
			return true
		}
		// "*/status" matches the status subresource of any resource.
		if sub != "" && r == "*/"+sub {
			return true
		}
	}
	return false
}

func nonResourceURLMatches(ruleURLs []string, path string) bool {
	for _, u := range ruleURLs {
		if u == rbacv1.NonResourceAll || u == path ||
			(strings.HasSuffix(u, "*") && strings.HasPrefix(path, strings.TrimRight(u, "*"))) {
			return true
		}
	}
	return false
}

func contains(list []string, value string) bool {
	for _, v := range list {
		if v == value {
			return true
		}
	}
	return false
}
