"""kanodes3's output, byte for byte as Kadeploy3 3.3.11 prints it for the same records.

bin/kanodes3 `run`: a single kind is printed as the server's `to_yaml` of the objects it built
(`get(path,params,:yaml,false)`, then `debug ret`); `-a` is the client's `ret.to_yaml` of the
four JSON answers concatenated. Expected texts: Ruby's Psych output for those objects, on the
libyaml of Kadeploy3's Ruby 2.x (a nil value is written `key: `, with the space; kadeploy.psych).
"""

from __future__ import annotations

from kadeploy.cli import printing
from kadeploy.cli.kanodes3 import status_text

RUNNING = {"wid": "D-1", "user": "alice", "done": False, "error": False, "start_time": 1700000000,
           "environment": {"id": 3, "user": "root", "name": "debian12-min", "version": 1}, "logs": False,
           "nodes": {"ok": [], "ko": [], "processing": ["node-1.c1.testbed", "node-2.c1.testbed"]},
           "time": 12.34}


def test_deployments_status_has_symbol_keys_as_work_get_builds_them() -> None:
    # server/kaworkflow.rb `work_get`: ret = {:wid, :user, :done, :error, :start_time}, then
    # :environment {:id, :user, :name, :version}, :logs, :nodes {:ok, :ko, :processing}, :time
    assert status_text("deploy", [[RUNNING]]) == (
        "---\n"
        "- :wid: D-1\n"
        "  :user: alice\n"
        "  :done: false\n"
        "  :error: false\n"
        "  :start_time: 1700000000\n"
        "  :environment:\n"
        "    :id: 3\n"
        "    :user: root\n"
        "    :name: debian12-min\n"
        "    :version: 1\n"
        "  :logs: false\n"
        "  :nodes:\n"
        "    :ok: []\n"
        "    :ko: []\n"
        "    :processing:\n"
        "    - node-1.c1.testbed\n"
        "    - node-2.c1.testbed\n"
        "  :time: 12.34\n")


def test_one_workflow_by_id_is_a_hash_and_none_running_is_an_empty_list() -> None:
    # `work_get(kind,cexec,wid)` returns the hash itself; without wid, the list (`[].to_yaml`)
    other = {"wid": "P-2", "user": "bob", "done": True, "error": False, "start_time": 1700000001,
             "nodes": ["node-3.c1.testbed"]}  # not the owner: `ret[:nodes] = info[:nodelist]`
    assert status_text("power", [other]) == (
        "---\n:wid: P-2\n:user: bob\n:done: true\n:error: false\n:start_time: 1700000001\n"
        ":nodes:\n- node-3.c1.testbed\n")
    assert status_text("reboot", [[]]) == "--- []\n"


def test_consoles_status_follows_console_get() -> None:
    # server/kaconsole.rb `console_get`: {:id, :user, :node}, :error, :attached, :console_uri, :time
    console = {"id": "C-1", "user": "alice", "node": "node-1.c1.testbed", "error": False, "attached": False,
               "console_uri": "tcp://127.0.0.1:25301", "time": 3.5}
    assert status_text("console", [[console]]) == (
        "---\n- :id: C-1\n  :user: alice\n  :node: node-1.c1.testbed\n  :error: false\n"
        "  :attached: false\n  :console_uri: tcp://127.0.0.1:25301\n  :time: 3.5\n")


def test_all_statuses_are_the_clients_yaml_of_json_with_string_keys() -> None:
    # bin/kanodes3: `ret += get(p,params)` (JSON, string keys) for deploy, reboot, power, console
    power = {"wid": "P-3", "user": "alice", "done": False, "error": False, "start_time": 1700000002,
             "logs": True, "nodes": {"ok": ["node-4.c1.testbed"], "ko": [], "processing": []}, "time": 0.5}
    assert status_text("all", [[], [], [power], []]) == (
        "---\n- wid: P-3\n  user: alice\n  done: false\n  error: false\n  start_time: 1700000002\n"
        "  logs: true\n  nodes:\n    ok:\n    - node-4.c1.testbed\n    ko: []\n    processing: []\n"
        "  time: 0.5\n")
    assert status_text("all", [[], [], [], []]) == "--- []\n"


def test_node_states_have_string_keys_and_nil_for_nodes_never_operated() -> None:
    # common/nodes.rb `get_states` (LEFT JOIN environments: null name, version, user), then
    # server/kanodes.rb `ret[n] = nil unless ret[n]`
    answer = {"node-1.c1.testbed": {"state": "deployed", "user": "alice",
                                    "environment": {"name": "debian12-min", "version": 1, "user": "root"}},
              "node-10.c1.testbed": {"state": "aborted", "user": "bob", "environment": None},
              "node-2.c1.testbed": None}
    assert status_text("state", [answer]) == (
        "---\n"
        "node-1.c1.testbed:\n"
        "  state: deployed\n"
        "  user: alice\n"
        "  environment:\n"
        "    name: debian12-min\n"
        "    version: 1\n"
        "    user: root\n"
        "node-10.c1.testbed:\n"
        "  state: aborted\n"
        "  user: bob\n"
        "  environment:\n"
        "    name: \n"      # libyaml before 0.2.5: the separator space before an empty scalar
        "    version: \n"
        "    user: \n"
        "node-2.c1.testbed: \n")


def test_multi_server_lines_are_prefixed_by_debug() -> None:
    # lib/kadeploy3/client/client.rb `debug`: sprintf("%-10s%s","[#{@name}] ",line) on each line
    assert printing.debug("--- []\n", "nancy") == "[nancy]   --- []\n"
    assert printing.debug("a\nb\n", "grenoble-site") == "[grenoble-site] a\n[grenoble-site] b\n"
    assert printing.debug("No environment has been found") == "No environment has been found\n"
