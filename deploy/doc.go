// Package deploy holds the deployment artefacts of the esflow services: a
// multi-stage Dockerfile, a docker-compose file for the whole pipeline and
// Kubernetes manifests (see README.md). It has no Go API; its test checks
// that those files parse and name only binaries, flags, environment
// variables, ports and endpoints the code really has.
package deploy
