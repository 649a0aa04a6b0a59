#!/usr/bin/env bash
# credentials.sh OVERLAY: write manifests/overlays/OVERLAY/{credentials,credentials-readonly,db}.env
# with random values when they are missing (never overwrites). These files are gitignored; the
# overlay's secretGenerator turns them into the recs-s3, recs-s3-readonly and marketplace-db Secrets.
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
overlay="${1:?usage: credentials.sh kind|minikube}"
dir="${ROOT}/manifests/overlays/${overlay}"
[ -d "$dir" ] || die "no overlay ${dir}"
rand() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
umask 077
if [ ! -f "${dir}/credentials.env" ]; then
  printf 'AWS_ACCESS_KEY_ID=recs-%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$(rand | cut -c1-12)" "$(rand)" > "${dir}/credentials.env"
  info "wrote ${dir}/credentials.env (random MinIO credentials, gitignored)"
fi
if [ ! -f "${dir}/credentials-readonly.env" ]; then
  printf 'AWS_ACCESS_KEY_ID=recs-ro-%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$(rand | cut -c1-12)" "$(rand)" > "${dir}/credentials-readonly.env"
  info "wrote ${dir}/credentials-readonly.env (the predictors' read-only MinIO user, gitignored)"
fi
if [ ! -f "${dir}/db.env" ]; then
  printf 'POSTGRES_USER=recs\nPOSTGRES_PASSWORD=%s\n' "$(rand)" > "${dir}/db.env"
  info "wrote ${dir}/db.env (random demo-database password, gitignored)"
fi
