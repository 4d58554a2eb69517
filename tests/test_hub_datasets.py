"""Hub datasets without a script: `llmft download-data` and the data chart's `hubDataset` values.

The Hub cannot be reached from here: `HubStandIn` (tests/hub_standin.py) serves
dataset repositories (`repo_type=dataset` URLs) from local folders, and
`huggingface_hub`'s real client talks to it through HF_ENDPOINT. The bucket is the
real S3 server (SeaweedFS) of tests/conftest.py; the chart runs through the local
runner (`llmft local`) with the real Helm engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness import CHARTS, OVERRIDES, render_chart, render_valid
from hub_standin import HubStandIn, offline_off, subprocess_environment

from llmft.errors import UserError
from llmft.staging.convert import ConvertOptions
from llmft.staging.download_data import download_data
from llmft.storage import download_tree, list_objects, parse_location, read_manifest
from llmft.storage.transfer import TransferSettings

LLMFT = str(Path(sys.executable).parent / "llmft")
FAST = TransferSettings(workers=4, attempts=1, backoff_seconds=0.1)
DATA_CHART = CHARTS / "download-data-to-bucket"
HUB_VALUES = OVERRIDES / "download-data-to-bucket" / "hub-dataset-yelp-to-minio.yaml"
HUB_SETS = [
    "hubDataset.id=org/reviews",
    "hubDataset.path=data",
    "hubDataset.revision=v1",
    "bucketDataDir=default-bucket/datasets/reviews",
]
TRAIN = "data/train-00000-of-00001.parquet"
TEST = "data/test-00000-of-00001.parquet"


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def bucket_files(location: str, tmp_path: Path) -> dict[str, bytes]:
    """What the bucket folder holds, downloaded with verification (refused without a manifest)."""
    target = tmp_path / "back" / location.replace("/", "_")
    shutil.rmtree(target, ignore_errors=True)
    download_tree(parse_location(location), target)
    return local_files(target)


def jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict[str, Path]:
    """Folders published as dataset repositories: reviews (parquet, train/test), qa (csv), reviews v2."""
    import pandas as pd

    root = tmp_path_factory.mktemp("hub-datasets")
    reviews = root / "reviews"
    (reviews / "data").mkdir(parents=True)
    (reviews / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Reviews\n")
    (reviews / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    words = ["great", "awful", "fine", "bad", "lovely"]
    pd.DataFrame({"text": [f"review {i}: {words[i % 5]}" for i in range(20)], "label": [i % 2 for i in range(20)]})[
        ["text", "label"]
    ].to_parquet(reviews / TRAIN)
    pd.DataFrame({"text": [f"held-out {i}" for i in range(6)], "label": [0, 1] * 3}).to_parquet(reviews / TEST)
    v2 = root / "reviews-v2"
    shutil.copytree(reviews, v2)
    pd.DataFrame({"text": ["only one row now"], "label": [1]}).to_parquet(v2 / TRAIN)
    qa = root / "qa"
    qa.mkdir()
    (qa / "README.md").write_text("# QA\n")
    lines = ["question,answer"] + [f"What is {i} plus {i}?,{i} plus {i} is {2 * i}." for i in range(12)]
    (qa / "qa.csv").write_text("\n".join(lines) + "\n")
    chats = root / "chats"
    (chats / "data").mkdir(parents=True)
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    (chats / "data" / "train.jsonl").write_text(
        "\n".join(json.dumps({"conversation": conversation, "id": f"c{i}"}) for i in range(3)) + "\n"
    )
    return {"reviews": reviews, "reviews-v2": v2, "qa": qa, "chats": chats}


@pytest.fixture
def hub(repos, monkeypatch):
    """org/reviews (main = v2 content, tag v1 = the first commit), org/qa, and a private copy of org/qa."""
    with HubStandIn() as server:
        server.add_repo("org/reviews", repos["reviews"], repo_type="dataset", branches=("main", "v1"))
        server.add_revision("org/reviews", repos["reviews-v2"], ("main",), repo_type="dataset")
        server.add_repo("org/qa", repos["qa"], repo_type="dataset")
        server.add_repo("org/chats", repos["chats"], repo_type="dataset")
        server.add_repo("org/secret-qa", repos["qa"], repo_type="dataset", private=True, tokens=("hf_granted",))
        server.add_repo("org/reviews", repos["qa"])  # a model of the same name: the tables are apart
        offline_off(monkeypatch, server.endpoint)
        yield server


# ---------------------------------------------------------------- files as they are


def test_dataset_folder_streams_into_the_bucket_with_a_manifest_and_rerun_skips(bucket, hub, repos, tmp_path):
    destination = f"{bucket}/datasets/reviews"
    v1 = hub.datasets["org/reviews"].commit
    report = download_data("hf://datasets/org/reviews/data", destination, revision="v1", settings=FAST)
    assert sorted(report.copy.copied) == ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    assert f"hf://datasets/org/reviews/data@v1 (commit {v1[:12]})" == report.source
    expected = {name[len("data/") :]: data for name, data in local_files(repos["reviews"]).items() if "/" in name}
    assert bucket_files(destination, tmp_path) == expected  # verified against the manifest's sha256
    assert set(read_manifest(parse_location(destination)).files) == set(expected)
    # The parquet files are LFS files: they came by the CDN redirect, with their sha256 known in advance.
    assert sum(path.startswith("/lfs-cdn/") for path in hub.downloads()) == 2

    hub.requests.clear()
    again = download_data("hf://datasets/org/reviews/data", destination, revision="v1", settings=FAST)
    assert again.copy.copied == [] and len(again.copy.skipped) == 2
    assert not any(path.startswith("/lfs-cdn/") for path in hub.downloads())  # nothing fetched again


def test_whole_repository_one_file_and_a_revision(bucket, hub, repos, tmp_path):
    whole = f"{bucket}/datasets/reviews-all"
    download_data("hf://datasets/org/reviews", whole, settings=FAST)
    assert bucket_files(whole, tmp_path) == local_files(repos["reviews-v2"])  # main is the second commit

    one = f"{bucket}/datasets/reviews-test"
    report = download_data(f"hf://datasets/org/reviews/{TRAIN}", one, settings=FAST)
    assert report.copy.copied == ["train-00000-of-00001.parquet"]
    assert bucket_files(one, tmp_path) == {"train-00000-of-00001.parquet": (repos["reviews-v2"] / TRAIN).read_bytes()}
    # The first commit, by its hash: the older train file replaces the newer one.
    first = hub.datasets["org/reviews"].commit
    again = download_data(f"hf://datasets/org/reviews/{TRAIN}", one, revision=first, settings=FAST)
    assert again.copy.copied == ["train-00000-of-00001.parquet"]
    assert bucket_files(one, tmp_path) == {"train-00000-of-00001.parquet": (repos["reviews"] / TRAIN).read_bytes()}


def test_private_dataset_needs_a_token(bucket, hub, repos, monkeypatch, tmp_path):
    destination = f"{bucket}/datasets/secret"
    with pytest.raises(UserError) as missing:
        download_data("hf://datasets/org/secret-qa", destination, settings=FAST)
    assert str(missing.value).startswith("dataset org/secret-qa not found on the Hub at http://127.0.0.1:")
    assert "check hubDataset.id (Organization/DatasetName" in str(missing.value)
    assert "if it is private, give a token with access in HF_TOKEN" in str(missing.value)
    monkeypatch.setenv("HF_TOKEN", "hf_other")
    with pytest.raises(UserError, match="if it is private, check that the token in HF_TOKEN has access to it"):
        download_data("hf://datasets/org/secret-qa", destination, settings=FAST)
    assert list_objects(parse_location(destination)) == {}

    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    download_data("hf://datasets/org/secret-qa", destination, settings=FAST)
    assert bucket_files(destination, tmp_path) == local_files(repos["qa"])


@pytest.mark.parametrize(
    "source, kwargs, message",
    [
        (
            "hf://datasets/org/reviews/data/validation.parquet",
            {},
            r"^data/validation\.parquet is neither a file nor a folder of dataset org/reviews at revision main "
            r"\(commit [0-9a-f]{12}\): check the path \(chart: hubDataset\.path\); the repository has \.gitattributes",
        ),
        ("hf://datasets/org/reviews", {"revision": "v9"}, r"revision 'v9' not found in dataset org/reviews"),
        ("hf://datasets/reviews", {}, r"does not name a Hub dataset: write hf://datasets/Organization/DatasetName"),
        ("hf://datasets/org/reviews/../qa", {}, r"may not contain '\.\.'"),
        ("hf://org/reviews", {}, r"is a Hub model: a dataset is hf://datasets/org/reviews"),
    ],
)
def test_bad_sources_are_one_line_errors(bucket, hub, source, kwargs, message):
    with pytest.raises(UserError, match=message) as caught:
        download_data(source, f"{bucket}/datasets/x", settings=FAST, **kwargs)
    assert "\n" not in str(caught.value)
    assert list_objects(parse_location(f"{bucket}/datasets/x")) == {}


# ---------------------------------------------------------------- converted to JSONL


def test_converted_with_a_split_and_a_column_map_is_validated_and_uploaded(bucket, hub, tmp_path):
    destination = f"{bucket}/datasets/qa"
    options = ConvertOptions(split="train[:75%]", column_map={"input": "question", "output": "answer"})
    report = download_data("hf://datasets/org/qa", destination, convert=options, settings=FAST)
    assert report.uploaded and report.converted.rows == 9
    files = bucket_files(destination, tmp_path)
    assert sorted(files) == ["qa-train.jsonl"]
    records = jsonl(files["qa-train.jsonl"])
    assert len(records) == 9
    assert records[2] == {
        "messages": [
            {"role": "user", "content": "What is 2 plus 2?"},
            {"role": "assistant", "content": "2 plus 2 is 4."},
        ]
    }
    # A second split into the same folder: the manifest lists both deliveries.
    rest = ConvertOptions(split="train[75%:]", column_map={"input": "question", "output": "answer"}, name="qa-eval")
    download_data("hf://datasets/org/qa", destination, convert=rest, settings=FAST)
    assert sorted(read_manifest(parse_location(destination)).files) == ["qa-eval.jsonl", "qa-train.jsonl"]
    assert len(jsonl(bucket_files(destination, tmp_path)["qa-eval.jsonl"])) == 3


def test_a_messages_column_under_another_name(bucket, hub, tmp_path):
    options = ConvertOptions(column_map={"messages": "conversation"}, name="chats")
    download_data("hf://datasets/org/chats/data", f"{bucket}/datasets/chats", convert=options, settings=FAST)
    records = jsonl(bucket_files(f"{bucket}/datasets/chats", tmp_path)["chats.jsonl"])
    assert [r["id"] for r in records] == ["c0", "c1", "c2"]
    assert records[0]["messages"][1] == {"role": "assistant", "content": "Hello!"}


def test_converted_to_a_local_folder_keeps_every_column(hub, tmp_path):
    out = tmp_path / "out"
    report = download_data(
        "hf://datasets/org/reviews", str(out), revision="v1", convert=ConvertOptions(split="test[2:5]")
    )
    assert report.converted.output == out / "reviews-test.jsonl" and not report.uploaded
    assert jsonl((out / "reviews-test.jsonl").read_bytes()) == [
        {"text": f"held-out {i}", "label": i % 2} for i in range(2, 5)
    ]


@pytest.mark.parametrize(
    "options, message",
    [
        (ConvertOptions(split="validation"), r"split 'validation': Unknown split \"validation\". Should be one of"),
        (ConvertOptions(split="train[5:5]"), r"split 'train\[5:5\]'.*no data"),
        (ConvertOptions(split="train[:abc"), r"--split 'train\[:abc' is not a split"),
        (ConvertOptions(source="xml"), r"--source 'xml' is not a format"),
        (ConvertOptions(source="csv"), r"has no csv file \(\.csv\); its files are \.gitattributes, README\.md"),
        (
            ConvertOptions(column_map={"input": "prompt", "output": "text"}),
            r"the column map needs column\(s\) 'prompt' \(for input\), which the data lacks; its columns are text, "
            r"label",
        ),
        (ConvertOptions(column_map={"answer": "text"}), r"--column-map answer: the keys are messages, input, output"),
    ],
)
def test_bad_conversion_options_name_the_fix(hub, tmp_path, options, message):
    with pytest.raises(UserError, match=message):
        download_data("hf://datasets/org/reviews", str(tmp_path / "out"), convert=options)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_classification_rows_are_validated_and_uploaded(bucket, hub, tmp_path, caplog):
    """Text and label columns are the records of `task: sequence-classification`: checked, counted, uploaded."""
    destination = f"{bucket}/datasets/reviews-jsonl"
    with caplog.at_level("INFO", logger="llmft.data"):
        download_data("hf://datasets/org/reviews", destination, revision="v1", convert=ConvertOptions(), settings=FAST)
    assert "reviews-train.jsonl: SEQUENCE-CLASSIFICATION, 20 valid record(s)" in caplog.text
    assert "records per label: 0 10, 1 10" in caplog.text
    assert len(jsonl(bucket_files(destination, tmp_path)["reviews-train.jsonl"])) == 20


def test_rows_of_no_known_record_fail_validation_before_the_upload(bucket, hub):
    """Converted rows go through prepare-data's checks: question/answer columns without a column map are not
    records any task reads; nothing is uploaded."""
    destination = f"{bucket}/datasets/qa-raw"
    with pytest.raises(UserError, match=r"qa-train\.jsonl:1: neither an SFT record"):
        download_data("hf://datasets/org/qa", destination, convert=ConvertOptions(), settings=FAST)
    assert list_objects(parse_location(destination)) == {}


def test_cli_copies_and_converts_and_fails_with_exit_status_2(bucket, hub, s3_env, tmp_path):
    env = subprocess_environment(hub.endpoint)
    env["HF_HOME"] = str(tmp_path / "hf-home")

    def llmft(*args):
        return subprocess.run([LLMFT, "download-data", *args], env=env, capture_output=True, text=True, timeout=300)

    copied = llmft(f"hf://datasets/org/reviews/{TEST}", f"{bucket}/datasets/cli")
    assert copied.returncode == 0, copied.stderr
    assert "copied 1 file(s)" in copied.stdout and "manifest written" in copied.stderr
    converted = llmft(
        "hf://datasets/org/qa",
        f"{bucket}/datasets/cli-qa",
        "--to-jsonl",
        "--split",
        "train[:50%]",
        "--column-map",
        "input=question",
        "--column-map",
        "output=answer",
    )
    assert converted.returncode == 0, converted.stderr
    assert f"qa-train.jsonl (6 rows), uploaded to {bucket}/datasets/cli-qa" in converted.stdout
    private = llmft("hf://datasets/org/secret-qa", f"{bucket}/datasets/cli-secret")
    assert private.returncode == 2
    assert private.stderr.strip().splitlines()[-1].startswith("error: dataset org/secret-qa not found on the Hub")
    assert "Traceback" not in private.stderr
    stray = llmft("hf://datasets/org/qa", f"{bucket}/datasets/x", "--split", "train[:5]")
    assert stray.returncode == 2 and "--split only apply with --to-jsonl" in stray.stderr


# ---------------------------------------------------------------- the data chart


def args_of(rendered) -> dict[str, list[str]]:
    spec = rendered.one("Job")["spec"]["template"]["spec"]
    return {c["name"]: c["command"] + c.get("args", []) for c in spec.get("initContainers", []) + spec["containers"]}


def env_names(rendered) -> dict[str, set[str]]:
    spec = rendered.one("Job")["spec"]["template"]["spec"]
    return {
        c["name"]: {e["name"] for e in c.get("env", [])} for c in spec.get("initContainers", []) + spec["containers"]
    }


def test_chart_copies_a_hub_dataset_with_one_container_like_the_model_chart():
    rendered = render_valid(
        DATA_CHART,
        values_files=[HUB_VALUES],
        set_values=[*HUB_SETS, "hfTokenSecret.name=hf-token"],
        release_name="reviews",
    )
    assert args_of(rendered) == {
        "download-data": [
            "llmft",
            "download-data",
            "hf://datasets/org/reviews/data",
            "default-bucket/datasets/reviews",
            "--scratch-dir",
            "/downloads",
            "--revision",
            "v1",
        ]
    }
    # The same environment as the model chart's one container: bucket credentials and the Hub token.
    assert {"BUCKET_STORAGE_SECRET_KEY", "HF_TOKEN"} <= env_names(rendered)["download-data"]
    assert rendered.of_kind("ConfigMap") == []  # no script
    assert "llmft storage ls default-bucket/datasets/reviews" in rendered.notes


def test_chart_converts_in_the_first_container_and_validates_in_the_second():
    sets = [
        *HUB_SETS,
        "hubDataset.toJsonl=true",
        "hubDataset.split=train[:80%]",
        "hubDataset.columnMap.input=question",
        "hubDataset.columnMap.output=answer",
        "hubDataset.source=parquet",
        "hubDataset.outputName=reviews-train",
        "hfTokenSecret.name=hf-token",
        "skipInvalid=true",
    ]
    rendered = render_valid(DATA_CHART, values_files=[HUB_VALUES], set_values=sets)
    found = args_of(rendered)
    assert found["download-data"] == [
        "llmft",
        "download-data",
        "hf://datasets/org/reviews/data",
        "/downloads/datasets",
        "--scratch-dir",
        "/downloads/hub",
        "--revision",
        "v1",
        "--to-jsonl",
        "--source",
        "parquet",
        "--split",
        "train[:80%]",
        "--column-map",
        "input=question",
        "--column-map",
        "output=answer",
        "--name",
        "reviews-train",
    ]
    assert found["validate-and-upload"][:4] == [
        "llmft",
        "prepare-data",
        "/downloads/datasets",
        "default-bucket/datasets/reviews",
    ]
    names = env_names(rendered)
    # Least privilege as with a script: the Hub token where the Hub is read, the bucket keys where it is written.
    assert "HF_TOKEN" in names["download-data"] and "BUCKET_STORAGE_SECRET_KEY" not in names["download-data"]
    assert "HF_TOKEN" not in names["validate-and-upload"]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"hubDataset": {"id": "reviews"}}, r"hubDataset\.id \"reviews\" is not a Hub dataset id"),
        ({"hubDataset": {"id": "org/reviews/data"}}, r"hubDataset\.id .* put a folder or file in hubDataset\.path"),
        ({"hubDataset": {"id": "org/reviews", "path": "data/../x"}}, r"hubDataset\.path \"data/\.\./x\" may not"),
        ({"hubDataset": {"id": "org/reviews", "path": "/data"}}, r"hubDataset\.path \"/data\" must be relative"),
        ({"hubDataset": {"id": "org/reviews"}, "dataScript": "print()"}, r"give dataScript or hubDataset\.id"),
        ({"hubDataset": {"id": "org/reviews", "split": "train[:10%]"}}, r"hubDataset\.split .* hubDataset\.toJsonl"),
        ({"hubDataset": {"id": "org/reviews", "toJsonl": True, "source": "xml"}}, r"hubDataset/source"),
        ({"hubDataset": {"id": "org/reviews", "revision": "a b"}}, r"hubDataset/revision"),
        ({"hubDataset": {"id": ""}}, r"dataScript is required: .*\(or hubDataset\.id"),
    ],
)
def test_bad_hub_dataset_values_fail_at_render_time(values, message):
    values = {"bucketDataDir": "default-bucket/datasets/x", **values}
    with pytest.raises(UserError, match=message):
        render_chart(DATA_CHART, values)


ID_AND_PATH_SAMPLES = [
    ("org/reviews", ""),
    ("Org-1/re.views_2", "data/train-00000-of-00001.parquet"),
    ("org/reviews", "data/"),
    ("reviews", ""),
    ("org/reviews/data", ""),
    ("org/rev iews", ""),
    ("-org/reviews", ""),
    ("org/reviews", "data/../secret"),
    ("org/reviews", "./data"),
    ("org/reviews", "/data"),
    ("org/reviews", "data//train.parquet"),
]


def test_the_charts_id_and_path_checks_agree_with_the_engine():
    """The chart's render-time checks of hubDataset.id and .path give the engine's verdict on every sample."""
    from llmft.staging.sources import hub_path_problem, parse_hub_url

    def engine_accepts(dataset_id: str, path: str) -> bool:
        try:
            ref = parse_hub_url(f"hf://datasets/{dataset_id}")
        except UserError:
            return False
        return ref.repo_id == dataset_id and not ref.path and hub_path_problem(path) is None

    def chart_accepts(dataset_id: str, path: str) -> bool:
        values = {"bucketDataDir": "default-bucket/datasets/x", "hubDataset": {"id": dataset_id, "path": path}}
        try:
            render_chart(DATA_CHART, values)
        except UserError:
            return False
        return True

    verdicts = {sample: (engine_accepts(*sample), chart_accepts(*sample)) for sample in ID_AND_PATH_SAMPLES}
    assert {sample: engine for sample, (engine, _) in verdicts.items()} == {
        sample: chart for sample, (_, chart) in verdicts.items()
    }
    assert sum(engine for engine, _ in verdicts.values()) == 3  # the samples cover both verdicts


def test_the_schemas_formats_and_column_map_fields_are_the_engines():
    from llmft.finetune.config import COLUMN_FIELDS, DATASET_SOURCES

    schema = json.loads((DATA_CHART / "values.schema.json").read_text())["properties"]["hubDataset"]["properties"]
    assert schema["source"]["enum"] == ["", *DATASET_SOURCES]
    assert list(schema["columnMap"]["properties"]) == list(COLUMN_FIELDS["chat"])


def test_hub_dataset_chart_runs_through_the_local_runner(bucket, hub, repos, s3_env, tmp_path):
    """`llmft local` with the override: the Job copies the private dataset with the Secret's token."""
    env = subprocess_environment(hub.endpoint, {**os.environ, **s3_env})
    env["LLMFT_STATE_DIR"] = str(tmp_path / "state")
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(yaml.safe_dump({"hf-token": {"hf-token": "hf_granted"}}))

    def local(*sets: str) -> subprocess.CompletedProcess:
        command = [LLMFT, "local", str(DATA_CHART), "-f", str(HUB_VALUES), "--secrets-file", str(secrets)]
        for item in (f"bucketStorageHost={s3_env['BUCKET_STORAGE_HOST']}", *sets):
            command += ["--set", item]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    destination = f"{bucket}/datasets/reviews"
    copy = local("hubDataset.id=org/secret-qa", "hubDataset.path=", f"bucketDataDir={destination}")
    assert copy.returncode != 0
    assert "dataset org/secret-qa not found on the Hub" in copy.stderr  # no token Secret: the clear error
    copy = local(
        "hubDataset.id=org/secret-qa", "hubDataset.path=", "hfTokenSecret.name=hf-token", f"bucketDataDir={destination}"
    )
    assert copy.returncode == 0, copy.stderr[-3000:]
    assert bucket_files(destination, tmp_path) == local_files(repos["qa"])

    converted = f"{bucket}/datasets/qa-jsonl"
    run = local(
        "hubDataset.id=org/qa",
        "hubDataset.path=qa.csv",
        "hubDataset.toJsonl=true",
        "hubDataset.split=train[:4]",
        "hubDataset.columnMap.input=question",
        "hubDataset.columnMap.output=answer",
        f"bucketDataDir={converted}",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "qa-train.jsonl: SFT, 4 valid record(s)" in run.stderr  # prepare-data's summary
    assert [r["messages"][0]["content"] for r in jsonl(bucket_files(converted, tmp_path)["qa-train.jsonl"])] == [
        f"What is {i} plus {i}?" for i in range(4)
    ]


def test_text_and_classification_files_are_checked_line_by_line(tmp_path):
    """validate-data / prepare-data know the records of the text and classification tasks (training's rules)."""
    from llmft.staging.validate import summary, validate_file

    reviews = tmp_path / "reviews.jsonl"
    rows = [{"text": "good", "label": 1}, {"text": "bad", "label": None}, {"text": "", "label": 0}, {"text": "ok"}]
    reviews.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    report = validate_file(reviews)
    assert report.kind == "sequence-classification" and report.records == 1
    assert [(item.line, item.reason) for item in report.invalid] == [
        (2, "`label` must be an integer or a non-empty string label, got null"),
        (3, '`text` must be a non-empty string, got ""'),
        (4, "`label` must be an integer or a non-empty string label, got null"),
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "Once upon a time."}\n{"messages": []}\n')
    text = validate_file(corpus)
    assert text.kind == "text" and text.records == 1
    assert text.invalid[0].reason.startswith("SFT record in a file of TEXT records")
    assert "text length in characters: p50 17" in summary(text)
