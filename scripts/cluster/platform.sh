#!/usr/bin/env bash
# platform.sh OVERLAY: install everything on the current kubectl context, in order, each step
# waiting for readiness: cert-manager -> KServe (Standard/RawDeployment mode) -> KFP standalone
# -> our namespace, MinIO + buckets, demo database, Secrets. Idempotent: safe to re-run.
# Called by kind-up.sh and minikube-up.sh.
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
overlay="${1:?usage: platform.sh kind|minikube}"
need kubectl python3 git
info "context: $(kubectl config current-context)"

log "1/5 cert-manager ${CERT_MANAGER_VERSION} (needed by KServe's webhooks)"
kubectl apply -f "${CERT_MANAGER_URL}"
wait_deployments cert-manager "${WAIT_SHORT}"

log "2/5 KServe ${KSERVE_VERSION}, Standard (RawDeployment) mode, no Knative/Istio"
kubectl create namespace kserve --dry-run=client -o yaml | kubectl apply -f -
kubectl apply --server-side --force-conflicts -f "${KSERVE_BASE_URL}/kserve-crds.yaml"
wait_crd inferenceservices.serving.kserve.io
kubectl apply --server-side --force-conflicts -f "${KSERVE_BASE_URL}/kserve.yaml"
wait_deployments kserve "${WAIT_SHORT}" kserve-controller-manager
info "configuring inferenceservice-config: defaultDeploymentMode=Standard, no Ingress (we port-forward)"
kubectl -n kserve get configmap inferenceservice-config -o json | python3 -c '
import json, sys
cm = json.load(sys.stdin)
d = cm["data"]
deploy = json.loads(d.get("deploy") or "{}"); deploy["defaultDeploymentMode"] = "Standard"
ingress = json.loads(d.get("ingress") or "{}"); ingress["disableIngressCreation"] = True
d["deploy"], d["ingress"] = json.dumps(deploy), json.dumps(ingress)
for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
    cm["metadata"].pop(k, None)
json.dump(cm, sys.stdout)
' | kubectl apply --server-side --force-conflicts -f -
kubectl -n kserve rollout restart deployment/kserve-controller-manager
kubectl -n kserve rollout status deployment/kserve-controller-manager --timeout="${WAIT_SHORT}s"
info "cluster resources (serving runtimes, storage containers); the webhook may need a moment"
retry 10 10 kubectl apply --server-side --force-conflicts -f "${KSERVE_BASE_URL}/kserve-cluster-resources.yaml"

log "3/5 Kubeflow Pipelines ${KFP_VERSION} standalone"
kubectl apply -k "${KFP_CLUSTER_SCOPED}"
wait_crd applications.app.k8s.io
retry 3 10 kubectl apply -k "${KFP_PLATFORM_AGNOSTIC}"
info "KFP pulls ~15 images on first start; 'Pending'/'ContainerCreating' for minutes is normal"
wait_deployments "${KFP_NS}" "${WAIT_LONG}"

log "4/5 our namespace, MinIO, buckets, demo database (manifests/overlays/${overlay})"
"${ROOT}/scripts/cluster/credentials.sh" "${overlay}"
# Everything but the InferenceServices: their image is loaded by kind-demo, and they serve only
# once the pipeline has published a bundle.
kubectl apply -k "${ROOT}/manifests/overlays/${overlay}" -l 'app.kubernetes.io/component!=predictor'
wait_deployments "${NS}" "${WAIT_SHORT}" minio marketplace-db
info "waiting for Job minio-buckets (creates s3://mlpipeline and s3://models) ..."
kubectl -n "${NS}" wait --for=condition=Complete job/minio-buckets --timeout="${WAIT_SHORT}s" \
  || { kubectl -n "${NS}" logs job/minio-buckets --tail=20 >&2 || true; explain_ns "${NS}"; die "bucket Job did not complete"; }

log "5/5 S3 settings for pipeline steps (namespace ${KFP_NS})"
# Pipeline steps run in the kubeflow namespace and publish bundles to s3://models on our MinIO:
# the same Secret and ConfigMap there, by the same names.
kubectl -n "${KFP_NS}" create secret generic recs-s3 \
  --from-env-file="${ROOT}/manifests/overlays/${overlay}/credentials.env" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "${NS}" get configmap recs-storage -o json | python3 -c '
import json, sys
cm = json.load(sys.stdin)
cm["metadata"] = {"name": cm["metadata"]["name"], "namespace": "kubeflow", "labels": cm["metadata"].get("labels", {})}
json.dump(cm, sys.stdout)
' | kubectl apply -f -

log "platform ready"
info "KFP UI:   kubectl -n ${KFP_NS} port-forward svc/ml-pipeline-ui 8080:80   -> http://localhost:8080"
info "MinIO:    kubectl -n ${NS} port-forward svc/minio 9000:9000 9001:9001     -> console http://localhost:9001"
info "next:     make kind-demo   (or minikube: see docs/cluster.md)"
