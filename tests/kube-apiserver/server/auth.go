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
)

// authorizationAlwaysAllow is the only --authorization-mode so far. An RBAC
// authorizer (or any other) plugs in at newModeAuthorizer.
const authorizationAlwaysAllow = "AlwaysAllow"

// applyAuth sets who may call: authentication by client certificate, then
// authorization (system:masters, then the chosen mode).
func applyAuth(c *genericapiserver.Config, caFile, mode string) error {
	if err := applyAuthentication(c, caFile); err != nil {
		return err
	}
	if err := applyAuthorization(c, mode); err != nil {
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
func applyAuthorization(c *genericapiserver.Config, mode string) error {
	modeAuthorizer, err := newModeAuthorizer(mode)
	if err != nil {
		return err
	}
	c.Authorization.Authorizer = union.New(
		authorizerfactory.NewPrivilegedGroups(user.SystemPrivilegedGroup),
		modeAuthorizer,
	)
	return nil
}

func newModeAuthorizer(mode string) (authorizer.Authorizer, error) {
	switch mode {
	case authorizationAlwaysAllow:
		return authorizerfactory.NewAlwaysAllowAuthorizer(), nil
	default:
		return nil, fmt.Errorf("--authorization-mode=%q is not supported (only %s)", mode, authorizationAlwaysAllow)
	}
}
