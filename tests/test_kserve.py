"""deploy/kserve, checked offline: every manifest against KServe's schemas (deploy/kserve/schemas/,
generated from KServe's SDK, with the Kubernetes types they embed checked by Kubernetes' own strict
schemas, as tests/test_deploy.py checks deploy/k8s), the runtime's protocol, ports and settings, the
InferenceServices' wiring to it, and the image's per-family model folders they select. No cluster:
what KServe does with them at run time is not tested here."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from functools import cache
from importlib import resources

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from service.http.app import discover
from service.settings import Settings
from tests.conftest import ROOT
from tests.test_deploy import K8S_VERSION, dockerfile, kustomize, stages

KSERVE = ROOT / "deploy" / "kserve"
SCHEMAS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime-v1alpha1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-v1beta1.json",
}
MANIFESTS = sorted(p.name for p in KSERVE.glob("*.yaml") if p.name != "kustomization.yaml")
K8S_VERSIONS = [K8S_VERSION, kubernetes_validate.latest_version()]
# The model families an InferenceService serves, and the models (artifact folders) each holds
FAMILIES = {"sentiment": {"sentiment"}, "translation": {"translate-en-de", "translate-en-fr"}}


def load(name: str) -> dict:
    (doc,) = [d for d in yaml.safe_load_all((KSERVE / name).read_text()) if d]
    return doc


def runtime() -> dict:
    return load("servingruntime.yaml")


def inference_services() -> dict[str, dict]:
    """family -> its InferenceService"""
    return {
        n.removeprefix("inferenceservice-").removesuffix(".yaml"): load(n)
        for n in MANIFESTS
        if n != "servingruntime.yaml"
    }


@cache
def validator(api_version: str, kind: str, k8s_version: str) -> jsonschema.Draft202012Validator:
    """KServe's schema of (apiVersion, kind), its Kubernetes $refs resolved by kubernetes-validate's
    strict schemas of that Kubernetes release."""
    schema = json.loads((KSERVE / "schemas" / SCHEMAS[(api_version, kind)]).read_text())
    k8s_dir = f"kubernetes-json-schema/v{k8s_version}-local-strict"
    k8s_defs = json.loads(resources.files("kubernetes_validate").joinpath(k8s_dir, "_definitions.json").read_text())
    registry = Registry().with_resources(
        [(schema["$id"], Resource.from_contents(schema)), (k8s_defs["$id"], Resource.from_contents(k8s_defs))]
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(doc: dict, k8s_version: str = K8S_VERSION, as_: tuple[str, str] | None = None) -> None:
    """Against the schema of its own apiVersion and kind, or of `as_` (apiVersion, kind)."""
    validator(*(as_ or (doc["apiVersion"], doc["kind"])), k8s_version).validate(doc)


# ----------------------------------------------------------------------------- the schemas


def test_the_schemas_say_where_they_come_from():
    for (api_version, kind), name in SCHEMAS.items():
        schema = json.loads((KSERVE / "schemas" / name).read_text())
        assert schema["properties"]["apiVersion"] == {"const": api_version}
        assert schema["properties"]["kind"] == {"const": kind}
        assert schema["x-generated-from"]["kserve"]  # the SDK release they were generated from
        assert "generate.py" in schema["description"] and "Apache-2.0" in schema["description"]
        assert schema["additionalProperties"] is False
        assert all(d.get("additionalProperties") is False for d in schema["$defs"].values()), name
        refs = set(
            re.findall(r'"\$ref": "https://kubernetes.io/api/_definitions.json#/\$defs/([\w.]+)"', json.dumps(schema))
        )
        assert "io.k8s.api.core.v1.Container" in refs or "io.k8s.api.core.v1.EnvVar" in refs, name
        for k8s_version in K8S_VERSIONS:  # the Kubernetes types our manifests use exist in every release checked
            defs = json.loads(
                resources.files("kubernetes_validate")
                .joinpath(f"kubernetes-json-schema/v{k8s_version}-local-strict", "_definitions.json")
                .read_text()
            )["$defs"]
            for ref in ("io.k8s.api.core.v1.Container", "io.k8s.api.core.v1.EnvVar", "io.k8s.api.core.v1.Probe"):
                assert ref in defs


# ----------------------------------------------------------------------------- the manifests


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_every_manifest_matches_kserves_schema(name, k8s_version):
    doc = load(name)
    assert (doc["apiVersion"], doc["kind"]) in SCHEMAS, name
    validate(doc, k8s_version)


def test_kustomize_renders_the_manifests_with_the_image_it_names():
    docs = kustomize(KSERVE)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        [("ServingRuntime", "rnn-serve"), *[("InferenceService", f"rnn-serve-{f}") for f in FAMILIES]]
    )
    for d in docs:
        validate(d)
    (rt,) = [d for d in docs if d["kind"] == "ServingRuntime"]
    (c,) = rt["spec"]["containers"]
    assert c["image"] == "rnn-serve:latest"  # kustomize's images: reach the runtime's container
    base = yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "kustomization.yaml").read_text())
    assert c["image"].split(":")[0] == base["images"][0]["newName"]  # the image deploy/k8s runs


def test_the_runtime_speaks_v2_on_a_rest_and_a_grpc_port(monkeypatch):
    spec = runtime()["spec"]
    assert "v2" in spec["protocolVersions"] and "grpc-v2" in spec["protocolVersions"]
    assert set(spec["protocolVersions"]) <= {"v1", "v2", "grpc-v1", "grpc-v2"}  # KServe's protocol names
    assert not spec.get("multiModel")
    (c,) = spec["containers"]
    assert c["name"] == "kserve-container"  # the container KServe merges an InferenceService's model spec into
    env = {e["name"]: e["value"] for e in c["env"]}

    # KServe's convention: REST first (its Service maps port 80 to the first port), named http1; gRPC named h2c
    rest, grpc = c["ports"]
    assert (rest["name"], rest["containerPort"]) == ("http1", 8080)
    assert (grpc["name"], grpc["containerPort"]) == ("h2c", 8081)
    assert (
        int(env["RNNSERVE_PORT"]) == rest["containerPort"] and int(env["RNNSERVE_GRPC_PORT"]) == grpc["containerPort"]
    )
    assert spec["annotations"]["prometheus.kserve.io/port"] == env["RNNSERVE_PORT"]
    probes = {
        "startupProbe": "/v2/health/ready",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    }
    for probe, path in probes.items():
        assert c[probe]["httpGet"] == {"path": path, "port": rest["containerPort"]}, probe

    sec = c["securityContext"]
    user = [a for i, a in stages(dockerfile())["runtime"] if i == "USER"][-1]
    assert sec["runAsNonRoot"] and f"{sec['runAsUser']}:{sec['runAsGroup']}" == user
    assert sec["readOnlyRootFilesystem"] and {"/tmp", "/dev/shm"} <= {m["mountPath"] for m in c["volumeMounts"]}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])

    # every variable is a real setting, and the values pass the service's own validation
    for key, value in env.items():
        assert key.startswith("RNNSERVE_") and key[9:].lower() in Settings.model_fields, key
        monkeypatch.setenv(key, value)
    s = Settings()
    assert (s.port, s.grpc_port, str(s.models_dir)) == (8080, 8081, "/app/models")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_inference_service_uses_the_runtime_over_v2_with_its_family(family, monkeypatch):
    isvc = inference_services()[family]
    rt = runtime()
    assert isvc["metadata"]["name"] == f"rnn-serve-{family}"
    # Standard (raw Deployment) mode: the runtime's two ports; Knative allows one
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    model = isvc["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2" and model["protocolVersion"] in rt["spec"]["protocolVersions"]
    assert model["runtime"] == rt["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in rt["spec"]["supportedModelFormats"]}
    assert "storageUri" not in model and "storage" not in model  # the models are in the image
    env = {e["name"]: e["value"] for e in model["env"]}
    assert env == {"RNNSERVE_MODELS_DIR": f"/app/families/{family}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    Settings()
    assert isvc["spec"]["predictor"]["terminationGracePeriodSeconds"] > float(
        {e["name"]: e["value"] for e in rt["spec"]["containers"][0]["env"]}["RNNSERVE_SHUTDOWN_GRACE"]
    )


def test_the_inference_services_cover_every_shipped_model_once():
    assert set(inference_services()) == set(FAMILIES)
    shipped = {p.parent.name for p in (ROOT / "models").glob("*/metadata.json")}
    served = [m for models in FAMILIES.values() for m in models]
    assert sorted(served) == sorted(shipped)


def test_the_images_family_folders_hold_one_family_each(tmp_path):
    """The Dockerfile's RUN that makes /app/families/<family>/ (links into /app/models), run here on a
    copy of /app whose models/ links to the shipped models: each folder is what the server then
    serves, one family, hash-verified (the folder names are the models' names over the protocol)."""
    (run,) = [a for i, a in stages(dockerfile())["runtime"] if i == "RUN" and "/app/families" in a]
    app = tmp_path / "app"
    (app / "models").mkdir(parents=True)
    for folder in (ROOT / "models").glob("*/"):
        (app / "models" / folder.name).symlink_to(folder)
    subprocess.run(["sh", "-ec", run.replace("/app/", f"{app}/")], check=True)
    assert {p.name for p in (app / "families").iterdir()} == set(FAMILIES)
    for family, models in FAMILIES.items():
        folder = app / "families" / family
        assert {p.name for p in folder.iterdir()} == models
        has_sentiment, pairs, _ = discover(Settings(models_dir=folder))
        assert has_sentiment == ("sentiment" in models)
        assert sorted(f"translate-{p}" for p in pairs) == sorted(models - {"sentiment"})


# ----------------------------------------------------------------------------- the check can fail


def _broken(doc: dict, edit) -> dict:
    doc = copy.deepcopy(doc)
    edit(doc)
    return doc


BREAKAGES = {
    # KServe's own fields
    "isvc: protocolVersions (the runtime's field) in the model": lambda d: d["spec"]["predictor"]["model"].update(
        protocolVersions=["v2"]
    ),
    "isvc: modelFormat is an object, not a string": lambda d: d["spec"]["predictor"]["model"].update(
        modelFormat="rnn-serve"
    ),
    "isvc: minReplicas as a string": lambda d: d["spec"]["predictor"].update(minReplicas="2"),
    "isvc: a misspelt predictor": lambda d: d["spec"].update(predicter=d["spec"].pop("predictor")),
    "isvc: the wrong kind": lambda d: d.update(kind="InferenceServices"),
    # Kubernetes types inside it, by Kubernetes' strict schema
    "isvc: env value as a number": lambda d: d["spec"]["predictor"]["model"]["env"][0].update(value=1),
    "isvc: a misspelt resources": lambda d: d["spec"]["predictor"]["model"].update(resource={}),
}
RUNTIME_BREAKAGES = {
    "runtime: no containers": lambda d: d["spec"].pop("containers"),
    "runtime: supportedModelFormats as a string": lambda d: d["spec"].update(supportedModelFormats="rnn-serve"),
    "runtime: autoSelect as a string": lambda d: d["spec"]["supportedModelFormats"][0].update(autoSelect="yes"),
    "runtime: containerPort as a string": lambda d: d["spec"]["containers"][0]["ports"][0].update(containerPort="8080"),
    "runtime: probe port as a list": lambda d: d["spec"]["containers"][0]["readinessProbe"]["httpGet"].update(
        port=[8080]
    ),
    "runtime: a misspelt readinessProbe": lambda d: d["spec"]["containers"][0].update(
        readinesProbe=d["spec"]["containers"][0].pop("readinessProbe")
    ),
    "runtime: a status": lambda d: d.update(status={}),
}


@pytest.mark.parametrize("what", [*BREAKAGES, *RUNTIME_BREAKAGES])
def test_validation_can_fail(what):
    """Each of these breaks one manifest in one place; the schemas reject every one of them, on
    every Kubernetes release checked (the intact manifests pass: tests above)."""
    edit = BREAKAGES.get(what) or RUNTIME_BREAKAGES[what]
    intact = inference_services()["sentiment"] if what in BREAKAGES else runtime()
    validate(intact)
    doc = _broken(intact, edit)
    for k8s_version in K8S_VERSIONS:
        with pytest.raises(jsonschema.ValidationError):
            validate(doc, k8s_version, as_=(intact["apiVersion"], intact["kind"]))


def test_a_kind_without_a_schema_is_an_error_not_a_pass():
    doc = _broken(runtime(), lambda d: d.update(kind="ClusterServingRuntime"))
    with pytest.raises(KeyError):
        validate(doc)
