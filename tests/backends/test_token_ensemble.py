"""The token-level ensemble (`ensemble: tokens`) on the embedded model: one answer per group of rows, each token
drawn from the rows' averaged next-token distributions."""

import pytest

from models.backend import SamplingSettings
from models.token_ensemble import ensemble_generate

TASK = "Answer in one short sentence. What is the capital of France?"
GREEDY = SamplingSettings(temperature=1e-4, top_p=1.0, max_new_tokens=12)  # the draw is the argmax


@pytest.mark.slow
def test_a_one_expert_ensemble_decodes_what_the_expert_would(exact_backend):
    prompt = exact_backend.chat_prompt(TASK)
    alone = exact_backend.generate([prompt], [GREEDY], seed=0)[0]
    ensemble = ensemble_generate(exact_backend, [prompt], [GREEDY], 12, seed=0)[0]
    assert ensemble == alone and ensemble.new_tokens > 0


@pytest.mark.slow
def test_each_group_writes_one_answer_its_rows_share(exact_backend):
    france = [exact_backend.chat_prompt(TASK, system=s) for s in ("You are a historian.", "You are a chef.")]
    japan = exact_backend.chat_prompt(TASK.replace("France", "Japan"))
    settings = [SamplingSettings(temperature=0.7, max_new_tokens=12)] * 3
    answers = ensemble_generate(exact_backend, [*france, japan], settings, 12, groups=[0, 0, 1], seed=1)
    assert len(answers) == 2 and all(a.text.strip() and 0 < a.new_tokens <= 12 for a in answers)
    # Two identical greedy rows average to their own distribution: the group writes what one row writes.
    same = ensemble_generate(exact_backend, [france[0], france[0]], [GREEDY, GREEDY], 12, seed=0)[0]
    assert same == exact_backend.generate([france[0]], [GREEDY], seed=0)[0]
    with pytest.raises(ValueError, match="one sampling setting and one group per prompt"):
        ensemble_generate(exact_backend, france, settings, 12, groups=[0])
    with pytest.raises(ValueError, match="server backend, which can combine whole answers only"):
        ensemble_generate(object(), france, settings[:2], 12)
