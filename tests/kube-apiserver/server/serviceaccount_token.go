package main

// ServiceAccount tokens, as kube-apiserver issues them: the TokenRequest API
// (`POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`), and the issuer's
// OIDC discovery document and keys, so that a relying party (an Entra ID
// stand-in) can check them as Entra checks a federated credential.
//
// Tokens are RS256 JWTs signed with a key generated when the server starts
// (tokens of an earlier run no longer verify), with kube-apiserver's claims:
// iss, sub (system:serviceaccount:NS:NAME), aud, exp, iat, nbf, jti and the
// kubernetes.io claim (namespace, serviceaccount name and uid). The issuer is
// the server's own URL, https://127.0.0.1:PORT.
//
// The token request is served behind the ordinary handler chain, so it is
// authenticated and authorized like any request (verb create, resource
// serviceaccounts, subresource token). Discovery and keys are served to
// anyone, as kube-apiserver serves them to system:anonymous once the
// system:service-account-issuer-discovery role is bound to it.

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
)

const (
	oidcDiscoveryPath = "/.well-known/openid-configuration"
	oidcKeysPath      = "/openid/v1/jwks"
	// kube-apiserver's bounds of spec.expirationSeconds, and its default.
	minTokenSeconds     = 600
	maxTokenSeconds     = 1 << 32
	defaultTokenSeconds = 3600
	tokenBodyLimit      = 64 << 10
)

// tokenIssuer signs ServiceAccount tokens and publishes its key.
type tokenIssuer struct {
	issuer string
	key    *rsa.PrivateKey
	kid    string
	client kubernetes.Interface
}

// serveServiceAccountTokens adds the TokenRequest API and the issuer's
// discovery endpoints to c's handler chain. client reads ServiceAccounts (the
// server's loopback client).
func serveServiceAccountTokens(c *genericapiserver.Config, client kubernetes.Interface) error {
	if c.SecureServing == nil || c.SecureServing.Listener == nil {
		return fmt.Errorf("service account tokens: no listener to name the issuer after")
	}
	_, port, err := net.SplitHostPort(c.SecureServing.Listener.Addr().String())
	if err != nil {
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("service account signing key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	// kube-apiserver's key id: the base64url SHA-256 of the DER public key.
	sum := sha256.Sum256(der)
	t := &tokenIssuer{
		issuer: "https://127.0.0.1:" + port,
		key:    key,
		kid:    base64.RawURLEncoding.EncodeToString(sum[:]),
		client: client,
	}
	build := c.BuildHandlerChainFunc
	c.BuildHandlerChainFunc = func(apiHandler http.Handler, c *genericapiserver.Config) http.Handler {
		return t.discovery(build(t.tokens(apiHandler), c))
	}
	return nil
}

// discovery serves the issuer's OIDC documents without authentication and
// passes everything else on.
func (t *tokenIssuer) discovery(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || (r.URL.Path != oidcDiscoveryPath && r.URL.Path != oidcKeysPath) {
			next.ServeHTTP(w, r)
			return
		}
		var body any
		if r.URL.Path == oidcDiscoveryPath {
			body = map[string]any{
				"issuer":                                t.issuer,
				"jwks_uri":                              t.issuer + oidcKeysPath,
				"response_types_supported":              []string{"id_token"},
				"subject_types_supported":               []string{"public"},
				"id_token_signing_alg_values_supported": []string{"RS256"},
			}
		} else {
			body = map[string]any{"keys": []map[string]string{{
				"use": "sig",
				"kty": "RSA",
				"kid": t.kid,
				"alg": "RS256",
				"n":   base64.RawURLEncoding.EncodeToString(t.key.N.Bytes()),
				"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(t.key.E)).Bytes()),
			}}}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		_ = json.NewEncoder(w).Encode(body)
	})
}

// tokens answers `create serviceaccounts/token` (the chain before it has
// authenticated and authorized the request) and passes everything else on.
func (t *tokenIssuer) tokens(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, ok := genericapirequest.RequestInfoFrom(r.Context())
		if !ok || !info.IsResourceRequest || info.APIGroup != "" || info.Resource != "serviceaccounts" ||
			info.Subresource != "token" || info.Verb != "create" {
			next.ServeHTTP(w, r)
			return
		}
		gv := schema.GroupVersion{Group: info.APIGroup, Version: info.APIVersion}
		response, err := t.issue(r, info.Namespace, info.Name)
		if err != nil {
			responsewriters.ErrorNegotiated(err, Codecs, gv, w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(response)
	})
}

func (t *tokenIssuer) issue(r *http.Request, namespace, name string) (*authenticationv1.TokenRequest, error) {
	resource := schema.GroupResource{Resource: "serviceaccounts"}
	body, err := io.ReadAll(io.LimitReader(r.Body, tokenBodyLimit+1))
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if len(body) > tokenBodyLimit {
		return nil, apierrors.NewRequestEntityTooLargeError("limit is 64 KiB")
	}
	var request authenticationv1.TokenRequest
	if err := json.Unmarshal(body, &request); err != nil {
		return nil, apierrors.NewBadRequest("decoding the TokenRequest: " + err.Error())
	}
	if request.Spec.ExpirationSeconds == nil {
		seconds := int64(defaultTokenSeconds)
		request.Spec.ExpirationSeconds = &seconds
	}
	if len(request.Spec.Audiences) == 0 {
		request.Spec.Audiences = []string{t.issuer}
	}
	// kube-apiserver's validation of the spec (ValidateTokenRequest).
	var errs field.ErrorList
	spec := field.NewPath("spec")
	if seconds := *request.Spec.ExpirationSeconds; seconds < minTokenSeconds {
		errs = append(errs, field.Invalid(spec.Child("expirationSeconds"), seconds, "may not specify a duration less than 10 minutes"))
	} else if seconds > maxTokenSeconds {
		errs = append(errs, field.Invalid(spec.Child("expirationSeconds"), seconds, "may not specify a duration larger than 2^32 seconds"))
	}
	for i, audience := range request.Spec.Audiences {
		if audience == "" {
			errs = append(errs, field.Invalid(spec.Child("audiences").Index(i), audience, "must not be empty"))
		}
	}
	if request.Spec.BoundObjectRef != nil {
		errs = append(errs, field.NotSupported(spec.Child("boundObjectRef"), request.Spec.BoundObjectRef.Kind, []string{}))
	}
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(schema.GroupKind{Group: "authentication.k8s.io", Kind: "TokenRequest"}, name, errs)
	}

	account, err := t.client.CoreV1().ServiceAccounts(namespace).Get(r.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, apierrors.NewNotFound(resource, name)
	}
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}

	now := time.Now()
	expires := now.Add(time.Duration(*request.Spec.ExpirationSeconds) * time.Second)
	claims := map[string]any{
		"iss": t.issuer,
		"sub": "system:serviceaccount:" + namespace + ":" + name,
		"aud": request.Spec.Audiences,
		"exp": expires.Unix(),
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"jti": string(uuid.NewUUID()),
		"kubernetes.io": map[string]any{
			"namespace": namespace,
			"serviceaccount": map[string]string{
				"name": name,
				"uid":  string(account.UID),
			},
		},
	}
	token, err := t.sign(claims)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	request.TypeMeta = metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenRequest"}
	request.ObjectMeta = metav1.ObjectMeta{Name: name, Namespace: namespace, CreationTimestamp: metav1.NewTime(now)}
	request.Status = authenticationv1.TokenRequestStatus{Token: token, ExpirationTimestamp: metav1.NewTime(expires)}
	return &request, nil
}

// sign makes a compact RS256 JWS of claims, with the key id in its header.
func (t *tokenIssuer) sign(claims map[string]any) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": "RS256", "kid": t.kid})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signed := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signed))
	signature, err := rsa.SignPKCS1v15(rand.Reader, t.key, crypto.SHA256, digest[:])
	if err != nil {
		return "", err
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(signature), nil
}
