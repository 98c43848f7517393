# A data-only image that carries one model bundle, for the Kubernetes init container (deploy/k8s/deployment.yaml)
# that copies it into the pod's emptyDir. The model then versions and rolls out like any image:
#
#   make export                                   # writes models/disaster-related
#   docker build -f deploy/docker/model.Dockerfile --build-arg BUNDLE=models/disaster-related \
#       -t registry.example.com/textclf-model:disaster-related-1 .
#
# deploy/docker/model.Dockerfile.dockerignore lets models/ into this build only (.dockerignore keeps it out of the
# other images).
FROM busybox:1.37.0
ARG BUNDLE=models/disaster-related
COPY --chown=10001:10001 ${BUNDLE}/ /bundle/
USER 10001:10001
ENTRYPOINT ["cp", "-R", "/bundle/.", "/models/"]
