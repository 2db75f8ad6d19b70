import time, pytest, collections
from tests.eval.test_lm_eval_generation import *
from lmforge.eval.generation import generate_all

@pytest.mark.parametrize("budget", [32, 64])
@pytest.mark.parametrize("chat", [False, True])
def test_dbg(talker, budget, chat):
    names, reqs = [], []
    for t in TASKS:
        for r in load_generation_task(t, limit=6):
            names.append(t); reqs.append(r)
    prompts = make_prompts(reqs, max_gen_toks=budget, chat=chat, tokenizer=talker.tok)
    t1=time.time()
    ours = generate_all(talker.model, talker.tok, prompts, batch_size=BATCH, max_length=MAX_LEN, progress=False)
    t2=time.time()
    hflm = HFLM(pretrained=str(talker.hf), device="cpu", dtype="float32", batch_size=BATCH, max_length=MAX_LEN, add_bos_token=False)
    instances = [Instance("generate_until", {}, (p.text, {"until": list(p.stop), "max_gen_toks": p.max_new_tokens, "do_sample": False}), i) for i, p in enumerate(prompts)]
    t3=time.time()
    theirs = hflm.generate_until(instances, disable_tqdm=True)
    t4=time.time()
    print("\nbudget", budget, "chat", chat, "ours", t2-t1, "gen", t4-t3, "same", sum(o.text==t for o,t in zip(ours,theirs)), "distinct", len({o.text for o in ours}))
    print(collections.Counter((n, o.finish) for n,o in zip(names,ours)))
    for n,p,o,t in zip(names,prompts,ours,theirs):
        if o.text != t: print("DIFF", n, repr(o.text), repr(t))
