{{/* Names and labels shared by every template. */}}

{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, short enough for the longest suffix ("-gateway-headless"). */}}
{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "shoal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: pass (dict "root" . "component" "gateway"). */}}
{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "shoal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "shoal.secretName" -}}
{{- default (printf "%s-auth" (include "shoal.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "shoal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shoal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The RayCluster's name; KubeRay names its head Service <name>-head-svc. */}}
{{- define "shoal.rayCluster" -}}
{{- printf "%s-ray" (include "shoal.fullname" .) -}}
{{- end -}}

{{- define "shoal.rayAddress" -}}
{{- printf "%s-head-svc.%s.svc:%d" (include "shoal.rayCluster" .) .Release.Namespace (int .Values.ray.gcsPort) -}}
{{- end -}}

{{- define "shoal.gatewayHeadless" -}}
{{- printf "%s-gateway-headless" (include "shoal.fullname" .) -}}
{{- end -}}

{{/* Every gateway's Raft address, by its stable DNS name (a pod's IP changes when it restarts). */}}
{{- define "shoal.raftPeers" -}}
{{- $peers := list -}}
{{- range $i := until (int .Values.gateway.replicas) -}}
{{- $peers = append $peers (printf "%s-gateway-%d.%s.%s.svc.%s:%d" (include "shoal.fullname" $) $i (include "shoal.gatewayHeadless" $) $.Release.Namespace $.Values.clusterDomain (int $.Values.gateway.raftPort)) -}}
{{- end -}}
{{- toJson $peers -}}
{{- end -}}

{{/* Environment every Ray process of the release shares. */}}
{{- define "shoal.rayEnv" -}}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
- name: RAY_worker_niceness             # shard replicas serve requests: not at Ray's niceness 15
  value: "0"
{{- if .Values.ray.gcsFaultTolerance.enabled }}
- name: RAY_gcs_rpc_server_reconnect_timeout_s   # outlive a head that restarts (as KubeRay sets for workers)
  value: "600"
{{- end }}
{{- end -}}

{{/* The volumes of /tmp and /dev/shm (the root file system is read-only). */}}
{{- define "shoal.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSize }}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.shmSize }}
{{- end -}}

{{- define "shoal.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: shm
  mountPath: /dev/shm
{{- end -}}

{{/* Spread a component's pods over nodes unless the values give an affinity. */}}
{{- define "shoal.affinity" -}}
{{- if .affinity -}}
{{- toYaml .affinity -}}
{{- else -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "shoal.selectorLabels" (dict "root" .root "component" .component) | nindent 12 }}
{{- end -}}
{{- end -}}
