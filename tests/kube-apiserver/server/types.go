package main

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The per-type behaviour of kube-apiserver that clients observe and that is
// cheap to reproduce: defaults, Secret.stringData, key and size checks,
// immutability, Deployment selector checks. Everything else a real cluster
// validates is accepted here; see README.md.

var (
	namespaceRules = typeRules{
		validName: validation.ValidateNamespaceName,
		hasStatus: true,
		initialStatus: func(obj runtime.Object) {
			obj.(*corev1.Namespace).Status.Phase = corev1.NamespaceActive
		},
	}
	secretRules = typeRules{
		normalize:      mergeSecretStringData,
		validate:       validateSecret,
		validateUpdate: validateSecretUpdate,
	}
	configMapRules = typeRules{
		validate:       validateConfigMap,
		validateUpdate: validateConfigMapUpdate,
	}
	serviceRules = typeRules{
		validName: validation.NameIsDNS1035Label,
		hasStatus: true,
	}
	deploymentRules = typeRules{
		validate:         validateDeployment,
		hasStatus:        true,
		tracksGeneration: true,
	}
	// StatefulSets and DaemonSets: stored with status and generation, not validated.
	workloadRules = typeRules{
		hasStatus:        true,
		tracksGeneration: true,
	}
	// RBAC object names may contain ':' (system:controller:...).
	rbacRules = typeRules{validName: path.ValidatePathSegmentName}
	// Both groups' events store corev1.Event (events.go).
	eventRules = typeRules{attrs: eventAttrs, table: eventTable{}}
	plainRules = typeRules{}
)

// addDefaultingFuncs registers the defaults kube-apiserver applies when it
// decodes a request (a subset: those a client reading its object back sees).
func addDefaultingFuncs(s *runtime.Scheme) {
	s.AddTypeDefaultingFunc(&corev1.Secret{}, func(obj any) {
		secret := obj.(*corev1.Secret)
		if secret.Type == "" {
			secret.Type = corev1.SecretTypeOpaque
		}
	})
	s.AddTypeDefaultingFunc(&corev1.Service{}, func(obj any) {
		spec := &obj.(*corev1.Service).Spec
		if spec.Type == "" {
			spec.Type = corev1.ServiceTypeClusterIP
		}
		if spec.SessionAffinity == "" {
			spec.SessionAffinity = corev1.ServiceAffinityNone
		}
		for i := range spec.Ports {
			port := &spec.Ports[i]
			if port.Protocol == "" {
				port.Protocol = corev1.ProtocolTCP
			}
			if port.TargetPort == (intstr.IntOrString{}) {
				port.TargetPort = intstr.FromInt32(port.Port)
			}
		}
	})
	s.AddTypeDefaultingFunc(&appsv1.Deployment{}, func(obj any) {
		spec := &obj.(*appsv1.Deployment).Spec
		if spec.Replicas == nil {
			spec.Replicas = ptrTo[int32](1)
		}
		if spec.Strategy.Type == "" {
			spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
		}
		if spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType && spec.Strategy.RollingUpdate == nil {
			quarter := intstr.FromString("25%")
			spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxUnavailable: &quarter, MaxSurge: &quarter}
		}
		if spec.RevisionHistoryLimit == nil {
			spec.RevisionHistoryLimit = ptrTo[int32](10)
		}
		if spec.ProgressDeadlineSeconds == nil {
			spec.ProgressDeadlineSeconds = ptrTo[int32](600)
		}
	})
}

// mergeSecretStringData moves stringData into data: stringData is write-only.
func mergeSecretStringData(obj runtime.Object) {
	secret := obj.(*corev1.Secret)
	if len(secret.StringData) == 0 {
		secret.StringData = nil
		return
	}
	if secret.Data == nil {
		secret.Data = map[string][]byte{}
	}
	for key, value := range secret.StringData {
		secret.Data[key] = []byte(value)
	}
	secret.StringData = nil
}

func validateSecret(obj runtime.Object) field.ErrorList {
	secret := obj.(*corev1.Secret)
	dataPath := field.NewPath("data")
	var errs field.ErrorList
	total := 0
	for key, value := range secret.Data {
		errs = append(errs, validateDataKey(dataPath, key)...)
		total += len(value)
	}
	if total > corev1.MaxSecretSize {
		errs = append(errs, field.TooLong(dataPath, "", corev1.MaxSecretSize))
	}
	if secret.Type == corev1.SecretTypeTLS {
		for _, key := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
			if _, ok := secret.Data[key]; !ok {
				errs = append(errs, field.Required(dataPath.Key(key), ""))
			}
		}
	}
	return errs
}

func validateSecretUpdate(obj, old runtime.Object) field.ErrorList {
	secret, oldSecret := obj.(*corev1.Secret), old.(*corev1.Secret)
	var errs field.ErrorList
	if secret.Type != oldSecret.Type {
		errs = append(errs, field.Invalid(field.NewPath("type"), secret.Type, "field is immutable"))
	}
	errs = append(errs, validateImmutableData(oldSecret.Immutable, secret.Immutable,
		apiequality.Semantic.DeepEqual(secret.Data, oldSecret.Data))...)
	return errs
}

func validateConfigMap(obj runtime.Object) field.ErrorList {
	cm := obj.(*corev1.ConfigMap)
	var errs field.ErrorList
	total := 0
	for key, value := range cm.Data {
		errs = append(errs, validateDataKey(field.NewPath("data"), key)...)
		total += len(value)
	}
	for key, value := range cm.BinaryData {
		errs = append(errs, validateDataKey(field.NewPath("binaryData"), key)...)
		if _, both := cm.Data[key]; both {
			errs = append(errs, field.Invalid(field.NewPath("binaryData").Key(key), key, "duplicate of key present in data"))
		}
		total += len(value)
	}
	if total > corev1.MaxSecretSize {
		errs = append(errs, field.TooLong(field.NewPath(""), "", corev1.MaxSecretSize))
	}
	return errs
}

func validateConfigMapUpdate(obj, old runtime.Object) field.ErrorList {
	cm, oldCM := obj.(*corev1.ConfigMap), old.(*corev1.ConfigMap)
	unchanged := apiequality.Semantic.DeepEqual(cm.Data, oldCM.Data) &&
		apiequality.Semantic.DeepEqual(cm.BinaryData, oldCM.BinaryData)
	return validateImmutableData(oldCM.Immutable, cm.Immutable, unchanged)
}

// validateImmutableData: once immutable is true, neither it nor the data may change.
func validateImmutableData(wasImmutable, isImmutable *bool, dataUnchanged bool) field.ErrorList {
	if wasImmutable == nil || !*wasImmutable {
		return nil
	}
	var errs field.ErrorList
	if isImmutable == nil || !*isImmutable {
		errs = append(errs, field.Forbidden(field.NewPath("immutable"), "field is immutable when `immutable` is set"))
	}
	if !dataUnchanged {
		errs = append(errs, field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set"))
	}
	return errs
}

func validateDataKey(parent *field.Path, key string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range utilvalidation.IsConfigMapKey(key) {
		errs = append(errs, field.Invalid(parent.Key(key), key, msg))
	}
	return errs
}

// validateDeployment catches the manifest mistakes a real server rejects
// before any controller runs: no selector, or one the template does not match.
func validateDeployment(obj runtime.Object) field.ErrorList {
	spec := obj.(*appsv1.Deployment).Spec
	specPath := field.NewPath("spec")
	var errs field.ErrorList
	if spec.Replicas != nil && *spec.Replicas < 0 {
		errs = append(errs, field.Invalid(specPath.Child("replicas"), *spec.Replicas, "must be greater than or equal to 0"))
	}
	if spec.Selector == nil {
		return append(errs, field.Required(specPath.Child("selector"), ""))
	}
	selector, err := metav1.LabelSelectorAsSelector(spec.Selector)
	switch {
	case err != nil:
		errs = append(errs, field.Invalid(specPath.Child("selector"), spec.Selector, err.Error()))
	case selector.Empty():
		errs = append(errs, field.Invalid(specPath.Child("selector"), spec.Selector, "empty selector is invalid for deployment"))
	case !selector.Matches(labels.Set(spec.Template.Labels)):
		errs = append(errs, field.Invalid(specPath.Child("template", "metadata", "labels"), spec.Template.Labels,
			"`selector` does not match template `labels`"))
	}
	if len(spec.Template.Spec.Containers) == 0 {
		errs = append(errs, field.Required(specPath.Child("template", "spec", "containers"), ""))
	}
	return errs
}

func ptrTo[T any](v T) *T { return &v }
