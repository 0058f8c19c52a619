"""Does MoA beat a single model, on your prompts and your models? Answers from several configurations (one model
alone; MoA with n proposers; Self-MoA; deeper MoA), judged pairwise against a baseline by an LLM judge in both
orders, plus questions scored by exact match; a results table and plots. ``notebooks/05_evaluate_moa`` walks
through it step by step; :func:`evaluate` does it in one call.
"""

from moa_lab._answers import extract_number
from moa_lab._attribution import attribute
from moa_lab.evaluate._benchmark import READERS, estimate_benchmark, run_benchmark
from moa_lab.evaluate._configs import (
    Config,
    check_configs,
    moa,
    proposer_sweep,
    reference,
    self_moa,
    single,
    standard_configs,
    variant,
    variants,
)
from moa_lab.evaluate._generate import ConfigRun, generate, plans
from moa_lab.evaluate._judge import (
    JUDGE_PROMPT,
    Judgment,
    check_judge,
    judge,
    judge_messages,
    parse_verdict,
    prompt_scores,
)
from moa_lab.evaluate._pipeline import EvalEstimate, as_tasks, estimate_evaluation, evaluate, evaluate_sync
from moa_lab.evaluate._report import (
    LOCAL_CAVEAT,
    EvalReport,
    Row,
    answers_view,
    judgments_view,
    order_effect,
    summarize,
)
from moa_lab.evaluate._samples import word_problems, write_samples
from moa_lab.evaluate._significance import PairedTest, maj_at_k, majority, mcnemar, mcnemar_p, paired_bootstrap
from moa_lab.evaluate._stats import bootstrap_ci, first_position_rate, length_controlled, win_rate
from moa_lab.evaluate._tasks import (
    BUILTIN_INSTRUCTIONS,
    BUILTIN_QUESTIONS,
    Task,
    builtin_tasks,
    extract,
    is_correct,
    load_tasks,
)

__all__ = [
    "BUILTIN_INSTRUCTIONS",
    "BUILTIN_QUESTIONS",
    "Config",
    "ConfigRun",
    "EvalEstimate",
    "EvalReport",
    "JUDGE_PROMPT",
    "Judgment",
    "LOCAL_CAVEAT",
    "PairedTest",
    "READERS",
    "Row",
    "Task",
    "answers_view",
    "as_tasks",
    "attribute",
    "bootstrap_ci",
    "builtin_tasks",
    "check_configs",
    "check_judge",
    "estimate_benchmark",
    "estimate_evaluation",
    "evaluate",
    "evaluate_sync",
    "extract",
    "extract_number",
    "first_position_rate",
    "generate",
    "is_correct",
    "judge",
    "judge_messages",
    "judgments_view",
    "length_controlled",
    "load_tasks",
    "maj_at_k",
    "majority",
    "mcnemar",
    "mcnemar_p",
    "moa",
    "order_effect",
    "paired_bootstrap",
    "parse_verdict",
    "plans",
    "prompt_scores",
    "proposer_sweep",
    "reference",
    "run_benchmark",
    "self_moa",
    "single",
    "standard_configs",
    "summarize",
    "variant",
    "variants",
    "win_rate",
    "word_problems",
    "write_samples",
]
