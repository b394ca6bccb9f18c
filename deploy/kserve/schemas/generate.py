"""Write the JSON schemas beside this file (servingruntime-v1alpha1.json, inferenceservice-v1beta1.json)
from KServe's Python SDK: tests/test_kserve.py validates deploy/kserve/*.yaml against them, offline.

KServe's SDK models (kserve.models.V1alpha1ServingRuntime, V1beta1InferenceService, ...) are generated
from KServe's OpenAPI definitions of its Go API types, the ones its CRDs are made from. Each class
lists its fields (attribute_map: the JSON names), their types (openapi_types) and which must be set
(its setters refuse None). This script turns that into JSON Schema (draft 2020-12), every object
closed (additionalProperties: false, as `kubectl apply --validate=strict` treats unknown fields).
The Kubernetes types KServe embeds (Container, EnvVar, Probe, ObjectMeta, ...) are not copied: they
are $refs into Kubernetes' own schemas (https://kubernetes.io/api/_definitions.json#/$defs/...),
which the test resolves from kubernetes-validate's strict schemas of the Kubernetes version it
checks, as tests/test_deploy.py does for deploy/k8s. A manifest's `status` is not part of these schemas.

Why not the SDK at test time: `import kserve` registers the protobuf package `inference` from its
own copy of the protocol's .proto, and tritonclient.grpc (a dependency of the service) registers the
same message names; one process cannot import both (TypeError: duplicate symbol
'inference.ServerLiveRequest'), and pytest runs every test in one process. Nor is its deserializer
strict: unknown fields are dropped, not reported. So the SDK runs once, here, in a venv of its own:

    python3 -m venv /tmp/kserve-sdk
    /tmp/kserve-sdk/bin/pip install kserve==0.21.0 kubernetes-validate==1.37.0
    /tmp/kserve-sdk/bin/python deploy/kserve/schemas/generate.py

KServe and its SDK are Apache-2.0 (https://github.com/kserve/kserve); so is this project.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from importlib import metadata, resources
from pathlib import Path

import kserve.models
import kubernetes.client.models
import kubernetes_validate

HERE = Path(__file__).resolve().parent
K8S_DEFS = "https://kubernetes.io/api/_definitions.json"
ROOTS = {
    "servingruntime-v1alpha1.json": ("V1alpha1ServingRuntime", "serving.kserve.io/v1alpha1", "ServingRuntime"),
    "inferenceservice-v1beta1.json": ("V1beta1InferenceService", "serving.kserve.io/v1beta1", "InferenceService"),
}
PRIMITIVES = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string"},
    "date": {"type": "string"},
    "object": {},  # any JSON value (the SDK's name for int-or-string, quantities held as objects, ...)
}
SPELLED_OUT = {"ResourceQuantity": "io.k8s.apimachinery.pkg.api.resource.Quantity"}
REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")


def kubernetes_definitions() -> dict[str, dict]:
    """The $defs of kubernetes-validate's newest strict schemas (the names and fields of Kubernetes' types)."""
    version = kubernetes_validate.latest_version()
    path = f"kubernetes-json-schema/v{version}-local-strict/_definitions.json"
    return json.loads(resources.files("kubernetes_validate").joinpath(path).read_text())["$defs"]


def kubernetes_name(cls_name: str, defs: dict[str, dict]) -> str:
    """io.k8s.api.core.v1.EnvVar for V1EnvVar: the definition of that version and kind whose fields are
    the class's (core.v1 and meta.v1 first when two match)."""
    cls = getattr(kubernetes.client.models, cls_name)
    fields = set(cls.attribute_map.values())
    found = []
    for name, schema in defs.items():
        *_, version, kind = name.split(".")
        same_name = version[:1] == "v" and f"{version.capitalize()}{kind}" == cls_name
        if same_name and set(schema.get("properties", {})) == fields:
            found.append(name)
    found.sort(key=lambda n: (not n.startswith(("io.k8s.api.core.v1.", "io.k8s.apimachinery.pkg.apis.meta.v1.")), n))
    if not found:
        raise SystemExit(f"no Kubernetes definition matches {cls_name} (fields {sorted(fields)})")
    return found[0]


class Builder:
    def __init__(self, k8s_defs: dict[str, dict]):
        self.k8s_defs = k8s_defs
        self.defs: dict[str, dict] = {}
        self.unresolved: set[str] = set()

    def type_schema(self, t: str) -> dict:
        if t in PRIMITIVES:
            return dict(PRIMITIVES[t])
        if m := re.fullmatch(r"list\[(.+)\]", t):
            return {"type": "array", "items": self.type_schema(m.group(1))}
        if m := re.fullmatch(r"dict\(str, (.+)\)", t):
            return {"type": "object", "additionalProperties": self.type_schema(m.group(1))}
        if hasattr(kserve.models, t):
            self.model(t)
            return {"$ref": f"#/$defs/{t}"}
        if hasattr(kubernetes.client.models, t):
            return {"$ref": f"{K8S_DEFS}#/$defs/{kubernetes_name(t, self.k8s_defs)}"}
        # Kubernetes types the SDK names by their Go package (K8sIoApiAppsV1DeploymentStrategy) or by
        # their OpenAPI name (ResourceQuantity), without a class of their own
        name = SPELLED_OUT.get(t)
        if m := re.fullmatch(r"K8sIoApi([A-Z][a-z]+)(V\d+(?:(?:alpha|beta)\d+)?)(\w+)", t):
            name = f"io.k8s.api.{m.group(1).lower()}.{m.group(2).lower()}.{m.group(3)}"
        if name in self.k8s_defs:
            return {"$ref": f"{K8S_DEFS}#/$defs/{name}"}
        # A type the SDK names but does not define (0.21.0: V1alpha1WorkerSpec, ServingRuntime's workerSpec
        # for multi-node runtimes; V1beta1MetricQuantity, a quantity): any value, and listed in x-unresolved.
        self.unresolved.add(t)
        return {"description": f"{t}: named by the SDK, not defined in it; not checked"}

    def model(self, name: str, skip: tuple[str, ...] = ()) -> dict:
        if name in self.defs:
            return self.defs[name]
        cls = getattr(kserve.models, name)
        schema: dict = {"type": "object", "additionalProperties": False, "properties": {}}
        self.defs[name] = schema  # before the fields: types may refer to themselves
        for attr, json_name in cls.attribute_map.items():
            if json_name not in skip:
                schema["properties"][json_name] = self.type_schema(cls.openapi_types[attr])
        required = sorted(cls.attribute_map[a] for a in set(REQUIRED.findall(inspect.getsource(cls))))
        if required:
            schema["required"] = required
        return schema


def root_schema(filename: str, cls_name: str, api_version: str, kind: str, k8s_defs: dict) -> dict:
    b = Builder(k8s_defs)
    top = b.model(cls_name, skip=("status",))
    b.defs.pop(cls_name)
    top["properties"]["apiVersion"] = {"const": api_version}
    top["properties"]["kind"] = {"const": kind}
    top["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://rnn-serve.local/deploy/kserve/schemas/{filename}",
        "title": f"{kind} ({api_version})",
        "description": (
            f"Generated by deploy/kserve/schemas/generate.py from kserve.models.{cls_name} of KServe's Python "
            f"SDK {metadata.version('kserve')} (Apache-2.0, https://github.com/kserve/kserve); Kubernetes types "
            f"by reference to {K8S_DEFS}. Do not edit: regenerate."
        ),
        "x-generated-from": {
            "kserve": metadata.version("kserve"),
            "kubernetes-client": metadata.version("kubernetes"),
            "kubernetes-validate": metadata.version("kubernetes-validate"),
        },
        "x-unresolved": sorted(b.unresolved),
        **top,
        "$defs": dict(sorted(b.defs.items())),
    }


def main() -> None:
    k8s_defs = kubernetes_definitions()
    for filename, (cls_name, api_version, kind) in ROOTS.items():
        schema = root_schema(filename, cls_name, api_version, kind, k8s_defs)
        (HERE / filename).write_text(json.dumps(schema, indent=1) + "\n")
        print(f"{filename}: {len(schema['$defs'])} KServe types", file=sys.stderr)


if __name__ == "__main__":
    main()
