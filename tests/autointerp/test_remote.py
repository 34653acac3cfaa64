"""Reading a server's replies: prompt log-probabilities, slots, alignment, Yes/No (no model, no server process).

The replies in ``data/`` were captured from the real llama.cpp server of test_server_real.py (llama-cpp-python
0.3.36 serving the SmolLM2 GGUF), cut to a few entries; vLLM's ``prompt_logprobs`` form is written as its
documentation gives it. A scripted server on 127.0.0.1 checks the token-id -> text fallback.
"""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from course_lib.autointerp import backends, pipeline, records, remote

DATA = Path(__file__).with_name("data")


def _entries(tops):
    return [remote.PromptEntry(None, None, t) for t in tops]


def test_value_distribution_renormalises_the_values_in_the_top_n_only():
    top = {"0": math.log(0.3), "3": math.log(0.1), "unknown": math.log(0.5), " 3": math.log(0.05), "10": -1.0}
    p = remote.value_distribution(top, 9)
    assert p.shape == (10,) and np.isclose(p.sum(), 1.0)
    assert np.isclose(p[0], 0.75) and np.isclose(p[3], 0.25)  # " 3" and "10" (S = 9) are no value tokens
    assert remote.value_distribution({"unknown": 0.0}, 9).sum() == 0  # none in the top N: predicts 0
    assert remote.value_distribution(None, 10).sum() == 0


def test_auto_alignment_reads_the_distribution_that_predicts_the_slot():
    slot = {"0": math.log(0.6), "7": math.log(0.3), "unknown": math.log(0.05)}  # what follows a tab
    tab = {"\t": math.log(0.9), "0": math.log(0.01)}  # what follows a record token
    after = {"\n": math.log(0.95)}  # what follows the placeholder
    # predicts (OpenAI, vLLM): entry i holds p(. | x_<i); entries: token, tab, unknown, newline
    predicts = _entries([None, tab, slot, after])
    probs, how = remote.read_slots(predicts, [2], 9)
    assert how == "predicts" and np.isclose(probs[0][7], 1 / 3)
    # follows (llama-cpp-python without BOS): entry i holds p(. | x_<=i), one earlier
    follows = _entries([tab, slot, after, None])
    probs, how = remote.read_slots(follows, [2], 9)
    assert how == "follows" and np.isclose(probs[0][7], 1 / 3)
    forced, _ = remote.read_slots(follows, [2], 9, alignment="predicts")
    assert forced[0].sum() == 0  # the wrong entry holds no value token at all
    probs, _ = remote.read_slots(follows, [None], 9)
    assert probs[0].sum() == 0  # an unreadable slot
    with pytest.raises(ValueError):
        remote.read_slots(follows, [2], 9, alignment="left")


def test_prompt_entries_reads_vllms_prompt_logprobs_form():
    choice = {"text": "", "prompt_logprobs": [
        None,
        {"15": {"logprob": -0.1, "rank": 1, "decoded_token": "0"}, "16": {"logprob": -2.5, "rank": 2, "decoded_token": "1"}},
        {"17": {"logprob": math.log(0.2), "rank": 1, "decoded_token": "x"},
         "99": {"logprob": math.log(0.1), "rank": 2, "decoded_token": "x"}},
    ]}
    e = remote.prompt_entries(choice)
    assert e[0].top is None and e[1].top == {"0": -0.1, "1": -2.5}
    assert np.isclose(math.exp(e[2].top["x"]), 0.3)  # two ids with one text add up
    with pytest.raises(backends.BackendError, match="no prompt log-probabilities"):
        remote.prompt_entries({"text": "", "logprobs": None})


def test_yes_probability_from_logprobs_then_text():
    lp = {"content": [{"token": "Yes", "logprob": -0.2, "top_logprobs": [
        {"token": "Yes", "logprob": math.log(0.6)}, {"token": " no", "logprob": math.log(0.2)},
        {"token": "Maybe", "logprob": math.log(0.1)}]}]}
    p, src = remote.yes_probability({"message": {"content": "Yes"}, "logprobs": lp})
    assert src == "logprobs" and np.isclose(p, 0.75)
    assert remote.yes_probability({"message": {"content": "No, it does not."}, "logprobs": None}) == (0.0, "text")
    assert remote.yes_probability({"message": {"content": "**Yes**"}}) == (1.0, "text")
    assert remote.yes_probability({"message": {"content": "Perhaps"}}) == (0.5, "undecided")


class _ScriptedServer:
    """A local HTTP server answering ``POST /v1/completions`` with ``respond(body) -> (status, payload)``;
    it records every request body in ``bodies``."""

    def __init__(self):
        self.bodies: list = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                status, payload = outer.respond(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def respond(self, body: dict) -> tuple[int, dict]:  # pragma: no cover - overridden
        raise NotImplementedError


class _IdsRefusingServer(_ScriptedServer):
    """HTTP 500 for a token-id prompt (as llama-cpp-python answers it), else ``reply``."""

    def __init__(self, reply: dict):
        self.reply = reply
        super().__init__()

    @property
    def prompts(self) -> list:
        return [b["prompt"] for b in self.bodies]

    def respond(self, body: dict) -> tuple[int, dict]:
        if isinstance(body["prompt"], list):
            return 500, {"error": {"message": "prompt: Input should be a valid string"}}
        return 200, {"choices": [self.reply]}


class _Tok:
    """The calls of a HF tokenizer the prompt builder makes: single-token digits, a two-token "10" (as
    SmolLM2's), the record's own tokens; anything else one id per character (never sent: ids are refused)."""

    def __init__(self, record: records.Record):
        self.strings = dict(zip(record.tokens, record.strings))

    def __call__(self, text, add_special_tokens=False):
        if len(text) == 1 and text.isdigit():
            return {"input_ids": [100 + int(text)]}
        return {"input_ids": [1000 + ord(c) for c in text]}

    def decode(self, ids):
        return "".join(self.strings[i] for i in ids)


@pytest.fixture(scope="module")
def recorded():
    return json.loads((DATA / "llamacpp_replies.json").read_text())


def test_recorded_reply_ids_refused_then_text_slots_by_offset(recorded):
    """The real reply (N = 15): ids refused (HTTP 500, not retried) -> the same prompt as text; every slot found
    by its text offset; llama-cpp-python's 'follows' alignment detected; the values equal the local model's
    value distribution renormalised over the same listed values (Q4_1 vs float32: within 0.15), and lie below
    the local simulator's over all ten values (the paper's top-15 truncation: 5-7 values listed here)."""
    srv = _IdsRefusingServer(recorded["reply"])
    rec = records.Record(**recorded["record"])
    try:
        client = backends.ChatClient(backends.ChatConfig(base_url=srv.url, model="m", api_key_env=None, max_retries=3))
        sim = remote.ServerSimulator(client, tokenizer=_Tok(rec))
        entries, slots = sim.slot_entries(recorded["explanation"], rec)
        values = sim.simulate(recorded["explanation"], [rec])[0]
    finally:
        srv.httpd.shutdown()
    assert [type(p) for p in srv.prompts] == [list, str, str] and sim.send_ids is False and client.n_requests == 3
    assert sim.scale == 9 and None not in slots and sim.last_alignment == "follows"
    listed = np.array([[str(v) in entries[s - 1].top for v in range(10)] for s in slots])
    assert 5 <= listed.sum(1).min() and listed.sum(1).max() <= 7
    p = np.asarray(recorded["local_probs"]) * listed
    same = (p / p.sum(1, keepdims=True)) @ (np.arange(10) * 10 / 9)
    assert np.abs(values - same).max() < 0.15
    assert (values < np.asarray(recorded["local_values"])).all()


def test_recorded_chat_reply_gives_p_yes_from_logprobs(recorded):
    p, src = remote.yes_probability(recorded["chat_reply"])
    top = {t["token"]: t["logprob"] for t in recorded["chat_reply"]["logprobs"]["content"][0]["top_logprobs"]}
    yes, no = math.exp(top["Yes"]) + math.exp(top["yes"]), math.exp(top["No"]) + math.exp(top["no"])  # cases add up
    assert src == "logprobs" and np.isclose(p, yes / (yes + no))


def test_from_server_shares_one_client_and_keys_results_by_server():
    cfg = backends.ChatConfig(base_url="http://127.0.0.1:9/v1", model="m", api_key_env=None)
    s = pipeline.Scorers.from_server(cfg)
    assert s.simulator.client is s.yes_no.client and s.simulator.scale == 10 and s.simulator.top_logprobs == 15
    ur = records.UnitRecords("u/0", "sae", 1.0, [], [records.Record(0, "top", [1], ["a"], [1.0])], [])

    class E:
        name = "x"

    other = pipeline.Scorers.from_server(backends.ChatConfig(base_url="http://127.0.0.1:9/v1", model="other"))
    local_none = pipeline.Scorers(simulator=None, yes_no=None)
    keys = {pipeline.results_key(E(), x, [ur]) for x in (s, other, local_none)}
    assert len(keys) == 3


class _IdsServer(_ScriptedServer):
    """Accepts token ids, echoing them OpenAI-style (entry i: the distribution that predicted token i):
    after a tab (id ``tab``) the value "3" is certain, elsewhere the tab is."""

    def __init__(self, tab: int):
        self.tab = tab
        super().__init__()

    @property
    def prompts(self) -> list:
        return self.bodies

    def respond(self, body: dict) -> tuple[int, dict]:
        ids = body["prompt"]
        tops = [None] + [{"3": 0.0, "unknown": -9.0} if prev == self.tab else {"\t": 0.0} for prev in ids[:-1]]
        return 200, {"choices": [{"text": "", "logprobs": {"tokens": [str(i) for i in ids], "top_logprobs": tops}}]}


def test_token_id_prompts_are_the_local_simulators_ids_and_read_by_index():
    rec = records.Record(0, "top", [7001, 7002, 7003], ["a", " b\n", "c"], [0.0, 1.0, 0.0])
    tok = _Tok(rec)
    srv = _IdsServer(tab=tok("\t")["input_ids"][0])
    try:
        client = backends.ChatClient(backends.ChatConfig(base_url=srv.url, model="m", api_key_env=None))
        sim = remote.ServerSimulator(client, tokenizer=tok, top_logprobs=20)
        values = sim.simulate('the letter "b".', [rec, rec])
    finally:
        srv.httpd.shutdown()
    expected_ids, _ = sim._ids.prompt('the letter "b".', rec.tokens)
    assert sim.send_ids is True and all(b["prompt"] == expected_ids for b in srv.prompts)
    assert srv.prompts[0]["echo"] is True and srv.prompts[0]["logprobs"] == 20 and srv.prompts[0]["max_tokens"] == 1
    assert sim.last_alignment == "predicts" and all(np.allclose(v, 3 * 10 / 9) for v in values)
