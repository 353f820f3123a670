"""A recorded environment named with -e: looked up, pinned, and its local files served (issue 20, point 1).

Follows Kadeploy3 3.3.11's client: bin/kadeploy3 and bin/kareboot3 `prepare`
(GET /environments, own environment first for kadeploy3, the first listed for
kareboot3, exact user/name/version sent, `add_localfiles(env)`), and
lib/kadeploy3/client/client.rb (`add_localfiles`, `check_params`: the files are
served and `--no-wait` refused).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from kadeploy.cli import kadeploy3, kareboot3
from kadeploy.client import workflow as workflow_module
from kadeploy.client.recorded import WARNING_MULTI_SERVER, WARNING_REMOTE_SERVER, environment_file_references

NODE = "node-1.c1.testbed"


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflow_module, "POLL_INTERVAL", 0.05)


def local_files(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {"image": directory / "img.tgz", "pre": directory / "pre.tgz", "post": directory / "post.tgz"}
    for kind, path in files.items():
        path.write_bytes(f"{kind} content\n".encode())
    return files


def recorded(user: str, version: int, files: dict[str, Path], name: str = "myenv") -> dict[str, Any]:
    return {"user": user, "name": name, "version": version, "os": "linux", "visibility": "shared",
            "image": {"file": str(files["image"]), "kind": "tar", "compression": "gzip"},
            "preinstall": {"archive": str(files["pre"]), "compression": "gzip", "script": "run.sh"},
            "postinstalls": [{"archive": str(files["post"]), "compression": "gzip", "script": "traitement.ash /"},
                             {"archive": "http://example.org/extra.tgz", "compression": "gzip", "script": "none"}]}


def serve_check(fake: Any, launch_path: str, paths: list[Path]) -> dict[str, Any]:
    """While the fake server handles the launch, fetch `paths` from the client's file server, as kadeploy3d does."""
    seen: dict[str, Any] = {}
    original = fake.route

    def route(method: str, path: str, query: dict, body: Any) -> Any:
        if (method, path) == ("POST", launch_path) and body and body.get("client"):
            seen["client"] = body["client"]
            for file in [*paths, Path("/etc/passwd")]:
                url = f"{body['client']}/{base64.urlsafe_b64encode(str(file).encode()).decode()}"
                answer = httpx.get(url, timeout=10)
                seen[str(file)] = (answer.status_code, answer.content, answer.headers.get("etag"))
        return original(method, path, query, body)

    fake.route = route
    return seen


def launch_body(fake: Any, path: str) -> dict[str, Any]:
    return fake.requests_to("POST", path)[0][3]


def test_kadeploy3_serves_the_local_files_of_a_recorded_environment(fake_server, tmp_path: Path, capsys) -> None:
    files = local_files(tmp_path)
    fake = fake_server([NODE], environments=[recorded("tester", 1, files), recorded("tester", 2, files)])
    seen = serve_check(fake, "/deployment", list(files.values()))
    assert kadeploy3.main(["-m", NODE, "-e", "myenv"]) == 0
    body = launch_body(fake, "/deployment")
    assert body["environment"] == {"kind": "database", "user": "tester", "name": "myenv", "version": 2}
    assert body["client"] == seen["client"]
    for path in files.values():
        status, content, etag = seen[str(path)]
        assert (status, content) == (200, path.read_bytes())
        stat = path.stat()
        assert etag == f'"{stat.st_ino:x}-{stat.st_size:x}-{int(stat.st_mtime):x}"'  # what the server stores
    assert seen["/etc/passwd"][0] == 404  # only the environment's files are served
    lookup = fake.requests_to("GET", "/environments")[0][2]
    assert lookup == {"name": ["myenv"], "last": ["true"]}
    out = capsys.readouterr().out
    assert "Warning" not in out and "The deployment is successful on nodes\nnode-1.c1.testbed\n" in out


def test_kadeploy3_prefers_the_users_own_environment_and_pins_the_version(fake_server, tmp_path: Path) -> None:
    files = local_files(tmp_path)
    public = recorded("root", 7, files)
    public["image"]["file"] = "server:///envs/img.tgz"
    del public["preinstall"], public["postinstalls"]
    fake = fake_server([NODE], environments=[public, recorded("tester", 3, files)])
    assert kadeploy3.main(["-m", NODE, "-e", "myenv"]) == 0
    assert launch_body(fake, "/deployment")["environment"]["user"] == "tester"
    assert kadeploy3.main(["-m", NODE, "-e", "myenv", "-u", "root"]) == 0
    body = fake.requests_to("POST", "/deployment")[1][3]
    assert body["environment"] == {"kind": "database", "user": "root", "name": "myenv", "version": 7}
    assert "client" not in body  # nothing local: no file server
    assert fake.requests_to("GET", "/environments")[1][2]["username"] == ["root"]


def test_kadeploy3_env_version_is_asked_for_not_last(fake_server, tmp_path: Path) -> None:
    files = local_files(tmp_path)
    fake = fake_server([NODE], environments=[recorded("tester", 1, files), recorded("tester", 2, files)])
    assert kadeploy3.main(["-m", NODE, "-e", "myenv", "--env-version", "1"]) == 0
    assert fake.requests_to("GET", "/environments")[0][2] == {"name": ["myenv"], "version": ["1"]}
    assert launch_body(fake, "/deployment")["environment"]["version"] == 1


def test_unknown_recorded_environment_is_refused_before_launching(fake_server, capsys) -> None:
    fake = fake_server([NODE], environments=[])
    assert kadeploy3.main(["-m", NODE, "-e", "nope"]) == 1
    assert capsys.readouterr().err == "The environment 'nope' does not exist\n"
    assert fake.requests_to("POST", "/deployment") == []


def test_unreadable_local_file_of_a_recorded_environment_is_refused(fake_server, tmp_path: Path, capsys) -> None:
    files = local_files(tmp_path)
    env = recorded("tester", 1, files)
    files["pre"].unlink()
    fake = fake_server([NODE], environments=[env])
    assert kadeploy3.main(["-m", NODE, "-e", "myenv"]) == 1
    assert capsys.readouterr().err == f"Cannot read file '{files['pre']}'\n"
    assert fake.requests_to("POST", "/deployment") == []


def test_no_wait_is_refused_when_recorded_files_must_be_served(fake_server, tmp_path: Path, capsys) -> None:
    files = local_files(tmp_path)
    fake = fake_server([NODE], environments=[recorded("tester", 1, files)])
    assert kadeploy3.main(["-m", NODE, "-e", "myenv", "--no-wait"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Cannot use --no-wait since some files have to be exported to the server:\n  ")
    assert f"  {files['image']}\n" in err and f"  {files['post']}\n" in err
    assert fake.requests_to("POST", "/deployment") == []


def test_warnings_for_another_server_and_for_several(fake_server, tmp_path: Path, capsys) -> None:
    files = local_files(tmp_path)
    envs = [recorded("tester", 1, files)]
    fake_server([NODE], name="site1", environments=envs)
    other = fake_server(["node-1.c2.testbed"], name="site2", environments=envs)
    assert kadeploy3.main(["-S", "site2", "-m", "node-1.c2.testbed", "-e", "myenv"]) == 0
    assert capsys.readouterr().out.startswith(WARNING_REMOTE_SERVER + "\n")
    assert other.requests_to("GET", "/environments")  # looked up where it is deployed
    assert kadeploy3.main(["-M", "-m", NODE, "-m", "node-1.c2.testbed", "-e", "myenv"]) == 0
    assert capsys.readouterr().out.startswith(WARNING_MULTI_SERVER + "\n")


def test_kareboot3_recorded_env_serves_the_files_and_takes_the_first_listed(fake_server, tmp_path: Path) -> None:
    files = local_files(tmp_path)
    other = local_files(tmp_path / "alice")
    fake = fake_server([NODE], environments=[recorded("alice", 4, other), recorded("tester", 1, files)])
    seen = serve_check(fake, "/reboot", list(other.values()))
    assert kareboot3.main(["-m", NODE, "-r", "recorded_env", "-e", "myenv", "-p", "3"]) == 0
    body = launch_body(fake, "/reboot")
    # kareboot3 takes envs.first, not the user's own one (bin/kareboot3, prepare)
    assert body["environment"] == {"kind": "database", "user": "alice", "name": "myenv", "version": 4}
    assert body["deploy_partition"] == 3
    assert all(seen[str(path)][:2] == (200, path.read_bytes()) for path in other.values())


def test_file_references_of_a_description_in_kadeploy3_order() -> None:
    env = {"image": {"file": "/a"}, "preinstall": {"archive": "local:///b"},
           "postinstalls": [{"archive": "server:///c"}, {"archive": "/d"}]}
    assert environment_file_references(env) == ["/a", "local:///b", "server:///c", "/d"]
