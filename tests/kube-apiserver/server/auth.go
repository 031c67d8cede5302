package main

import (
	"fmt"

	"k8s.io/apiserver/pkg/authentication/group"
	"k8s.io/apiserver/pkg/authentication/request/x509"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/authorization/union"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/informers"
)

// authorizationAlwaysAllow lets every authenticated user do anything; the
// other --authorization-mode is authorizationRBAC (rbac.go).
const authorizationAlwaysAllow = "AlwaysAllow"

// applyAuth sets who may call: authentication by client certificate, then
// authorization (system:masters, then the chosen mode, which may read the
// server's own objects through f).
func applyAuth(c *genericapiserver.Config, caFile, mode string, f informers.SharedInformerFactory) error {
	if err := applyAuthentication(c, caFile); err != nil {
		return err
	}
	if err := applyAuthorization(c, mode, f); err != nil {
		return err
	}
	// The loopback client (informers, admission, post-start hooks) uses a
	// random bearer token that authenticates as system:apiserver in
	// system:masters. Needs both an authenticator and an authorizer set.
	genericapiserver.AuthorizeClientBearerToken(c.LoopbackClientConfig, &c.Authentication, &c.Authorization)
	return nil
}

// applyAuthentication accepts client certificates signed by the CA in caFile
// (CN = user name, O = groups) and nothing else: anonymous requests are
// refused, unlike kube-apiserver's default, because with allow-all
// authorization an anonymous user could do anything.
func applyAuthentication(c *genericapiserver.Config, caFile string) error {
	ca, err := dynamiccertificates.NewDynamicCAContentFromFile("client-ca-bundle", caFile)
	if err != nil {
		return fmt.Errorf("--client-ca-file: %w", err)
	}
	// Makes the TLS listener ask for client certificates signed by this CA.
	if err := c.Authentication.ApplyClientCert(ca, c.SecureServing); err != nil {
		return err
	}
	c.Authentication.Authenticator = group.NewAuthenticatedGroupAdder(
		x509.NewDynamic(ca.VerifyOptions, x509.CommonNameUserConversion))
	return nil
}

// applyAuthorization lets system:masters do anything (as kube-apiserver does,
// before any mode) and asks the chosen mode about everyone else.
func applyAuthorization(c *genericapiserver.Config, mode string, f informers.SharedInformerFactory) error {
	modeAuthorizer, err := newModeAuthorizer(c, mode, f)
	if err != nil {
		return err
	}
	c.Authorization.Authorizer = union.New(
		authorizerfactory.NewPrivilegedGroups(user.SystemPrivilegedGroup),
		modeAuthorizer,
	)
	return nil
}

func newModeAuthorizer(c *genericapiserver.Config, mode string, f informers.SharedInformerFactory) (authorizer.Authorizer, error) {
	switch mode {
	case authorizationAlwaysAllow:
		return authorizerfactory.NewAlwaysAllowAuthorizer(), nil
	case authorizationRBAC:
		rbac := newRBACAuthorizer(f)
		if err := c.AddPostStartHook("rbac-informers-synced", rbac.waitForCaches); err != nil {
			return nil, err
		}
		return rbac, nil
	default:
		return nil, fmt.Errorf("--authorization-mode=%q is not supported (%s or %s)", mode, authorizationAlwaysAllow, authorizationRBAC)
	}
}
