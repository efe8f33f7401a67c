"""The images phase's reading of `docker save` tarballs: which ones can be
imported (one layer, a config Dockerfile instructions can say) and the
instructions they become. Putting them into a real dockerd is tested in
tests/docker/test_system_containers.py."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from pid1.phases.images import import_changes, read_tarball, split_reference

REPO = Path(__file__).resolve().parents[2]


def bundled_images():
    """image/bundled_images.py."""
    from image import bundled_images

    return bundled_images


def test_config_becomes_dockerfile_instructions() -> None:
    config = {
        "Cmd": ["sh", "-c", "echo 'a b'"],
        "Entrypoint": None,
        "Env": ["PATH=/usr/bin:/bin", "GREETING=hello world", "EMPTY="],
        "Labels": {"b": "2", "a.key": "one two"},
        "WorkingDir": "/srv",
        "User": "1000:1000",
        "Hostname": "",  # docker save writes empty fields: they say nothing
        "AttachStdin": False,
    }
    assert import_changes(config) == [
        'CMD ["sh", "-c", "echo \'a b\'"]',
        'ENV PATH="/usr/bin:/bin"',
        'ENV GREETING="hello world"',
        'ENV EMPTY=""',
        'LABEL "a.key"="one two" "b"="2"',
        "WORKDIR /srv",
        "USER 1000:1000",
    ]


@pytest.mark.parametrize(
    "config",
    [
        {"Healthcheck": {"Test": ["NONE"]}},  # no instruction carries it as a change
        {"ExposedPorts": {"80/tcp": {}}},
        {"Env": ['QUOTED="x"']},  # quoting would change the value
        {"Env": ["MULTI=a\nb"]},
        {"Labels": {"k": "back\\slash"}},
        {"Cmd": "sh"},  # not the list form
    ],
)
def test_what_instructions_cannot_say_is_not_imported(config: dict) -> None:
    assert import_changes(config) is None


def test_references_split_into_repository_and_tag() -> None:
    assert split_reference("busybox:latest") == ("busybox", "latest")
    assert split_reference("registry:5000/team/app:v1") == ("registry:5000/team/app", "v1")
    assert split_reference("registry:5000/team/app") == ("registry:5000/team/app", "latest")
    assert split_reference("plain") == ("plain", "latest")


def test_the_bundled_tarball_is_importable_with_its_config(tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("no busybox to build the bundled image from")
    module = bundled_images()
    path = tmp_path / "busybox.tar"
    path.write_bytes(module.image_tarball(module.BUNDLED[0], busybox))
    tarball = read_tarball(str(path))
    assert tarball.tags == ["busybox:latest", "pid1-dhcp:latest"]
    assert tarball.layer is not None and tarball.layer.endswith("/layer.tar")
    assert tarball.changes == [
        'CMD ["sh"]',
        f'ENV PATH="{module.PATH_ENV.split("=", 1)[1]}"',
        'LABEL "org.only-docker.bundled"="busybox:latest"',
    ]
    # the negative control: one config key no instruction says, and it is loaded instead
    path.write_bytes(module.image_tarball(module.BUNDLED[0], busybox, {"Healthcheck": {"Test": ["NONE"]}}))
    assert read_tarball(str(path)).layer is None


def save_tarball(path: Path, manifest: object, config: bytes = b'{"config":{}}') -> Path:
    with tarfile.open(path, "w") as tar:
        for name, content in (("manifest.json", json.dumps(manifest).encode()), ("c.json", config)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def test_a_tarball_of_two_layers_or_two_images_is_loaded(tmp_path: Path) -> None:
    def save(manifest: list[dict]) -> Path:
        return save_tarball(tmp_path / "image.tar", manifest)

    two_layers = read_tarball(str(save([{"Config": "c.json", "RepoTags": ["a:1"], "Layers": ["l1", "l2"]}])))
    assert (two_layers.tags, two_layers.layer) == (["a:1"], None)
    two_images = [{"Config": "c.json", "RepoTags": [f"{n}:1"], "Layers": ["l1"]} for n in "ab"]
    assert read_tarball(str(save(two_images))).layer is None
    untagged = read_tarball(str(save([{"Config": "c.json", "RepoTags": None, "Layers": ["l1"]}])))
    assert (untagged.tags, untagged.layer) == ([], None)
    one = read_tarball(str(save([{"Config": "c.json", "RepoTags": ["a:1"], "Layers": ["l1"]}])))
    assert (one.layer, one.changes) == ("l1", [])


@pytest.mark.parametrize(
    ("manifest", "config", "why"),
    [
        ({"a": 1}, b"{}", "not a list of images"),
        ([], b"{}", "not a list of images"),
        ([5], b"{}", "not an object"),
        ([{"Config": "c.json", "RepoTags": ["a:1"], "Layers": 5}], b"{}", "Layers is 5, not a list of strings"),
        ([{"Config": "c.json", "RepoTags": "a:1", "Layers": ["l1"]}], b"{}", "RepoTags is"),
        ([{"Config": "c.json", "RepoTags": ["a:1", 7], "Layers": ["l1"]}], b"{}", "RepoTags is"),
        ([{"Config": 3, "RepoTags": ["a:1"], "Layers": ["l1"]}], b"{}", "no Config file name"),
        ([{"Config": "c.json", "RepoTags": ["a:1"], "Layers": ["l1"]}], b"[1]", "not an image config object"),
        ([{"Config": "c.json", "RepoTags": ["a:1"], "Layers": ["l1"]}], b'{"config": 5}', "not an image config"),
    ],
)
def test_a_malformed_manifest_or_config_is_a_value_error_saying_why(
    tmp_path: Path, manifest: object, config: bytes, why: str
) -> None:
    """The images phase skips a tarball on ValueError (and the other handled
    errors); anything else would fail the phase, which is retried for ever."""
    path = save_tarball(tmp_path / "bad.tar", manifest, config)
    with pytest.raises(ValueError, match=why):
        read_tarball(str(path))


def test_a_failure_in_the_progress_stream_is_raised() -> None:
    from pid1.engine.client import progress_messages, raise_progress_error

    fine = b'{"status":"sha256:abc"}\n\n'
    raise_progress_error(progress_messages(fine))
    broken = b'{"status":"Loading layer"}\nnot json\n{"errorDetail":{"message":"no space"},"error":"no space"}\n'
    with pytest.raises(RuntimeError, match="no space"):
        raise_progress_error(progress_messages(broken))
