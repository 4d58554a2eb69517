"""LLM-as-judge: the rubric prompt for one answer, and the score read from the judge's reply.

The judge must end its reply with a line `Score: N` (N from 1 to 5); the last such line counts
(markdown emphasis and `N/5` are accepted). A reply without one, or a request that failed after its
retries, is a judge failure: it is counted in results.json (`judge_failures`, `judge_failure_rate`),
kept with its reason in samples.jsonl, and left out of the mean score; it never fails the evaluation.
"""

from __future__ import annotations

import re

from llmft.evaluate.endpoint import EndpointClient, RequestFailed
from llmft.evaluate.spec import Judge

SCORE_LINE = re.compile(r"score\s*[:=]?\s*\**\s*([1-5])(?:\s*/\s*5)?\b", re.IGNORECASE)


def judge_prompt(judge: Judge, question: str, reference: str, answer: str) -> str:
    return judge.prompt.format(question=question, reference=reference, answer=answer)


def parse_score(reply: str) -> int | None:
    """The score of the reply's last `Score: N`, None when there is none."""
    found = SCORE_LINE.findall(reply)
    return int(found[-1]) if found else None


def judge_answer(client: EndpointClient, judge: Judge, question: str, reference: str, answer: str) -> dict:
    """`judge_score` (1-5, or None) and, on failure, `judge_error`; the judge's reply is kept for reading."""
    prompt = judge_prompt(judge, question, reference, answer)
    try:
        reply = client.chat([{"role": "user", "content": prompt}], judge.max_tokens, 0.0)
    except RequestFailed as error:
        return {"judge_score": None, "judge_error": f"request failed: {error}"}
    score = parse_score(reply)
    if score is None:
        return {"judge_score": None, "judge_error": "no `Score: N` line in the reply", "judge_reply": reply[:2000]}
    return {"judge_score": score, "judge_reply": reply[:2000]}
