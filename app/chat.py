"""The terminal side of `evoforge chat`: read a line, answer it, until "quit", Ctrl-D or Ctrl-C; save on exit."""

import sys

from evoforge.core.config import TournamentConfig, judge_models

PROMPT = "you> "
HELP = ('Type a message. "/reward R" rates the last answer (R from -10 to 10, e.g. /reward 0.8); '
        '"/values" shows the experts\' values; "quit" or Ctrl-D leaves (the session is saved).')


def run_chat(config: TournamentConfig) -> int:
    from evoforge.knowledge.base import open_base
    from evoforge.knowledge.records import sources_markdown
    from evoforge.steps.chat import ChatSession
    from models.loading import load_backend

    kb = open_base(config.kb) if config.kb else None
    print("loading the models ...", flush=True)
    names = sorted(set(config.generator_models) | judge_models(config.judges))
    backends = {name: load_backend(name, config.precision, config.device) for name in names}
    session = ChatSession(config, backends, kb)
    print(f"evoforge chat ({len(session.experts)} experts" + (f", knowledge base {config.kb}" if kb else "") +
          f"). {HELP}", flush=True)
    try:
        while True:
            try:
                line = input(PROMPT).strip()
            except EOFError:  # Ctrl-D
                print()
                break
            if not line:
                continue
            if line.lower() in ("quit", "exit", "/quit"):
                break
            if line.startswith("/reward"):
                print(reward_line(session, line))
                continue
            if line == "/values":
                print("expert values: " + ", ".join(f"{e.expert_id}: {e.value:+.3f}" for e in session.experts))
                continue
            if line.startswith("/"):
                print(HELP)
                continue
            turn = session.turn(line)
            print(f"expert {turn['expert_id']}> {turn['answer']}")
            if turn["sources"]:
                print("sources:\n" + sources_markdown(turn["sources"]))
            sys.stdout.flush()
    except KeyboardInterrupt:  # Ctrl-C leaves too, and the session is still saved
        print()
    finally:
        saved = session.save()
        print(f"saved {len(session.turns)} turns: {saved['turns']}, {saved['records']}; experts: {saved['population']}",
              flush=True)
    return 0


def reward_line(session, line: str) -> str:
    """Apply `/reward R` to the last answer; the line to print (the new value, or what is wrong)."""
    parts = line.split()
    try:
        value = float(parts[1]) if len(parts) == 2 else None
    except ValueError:
        value = None
    if value is None:
        return "evoforge: usage: /reward R, a number from -10 to 10, e.g. /reward 0.8"
    try:
        new = session.reward(value)
    except ValueError as err:
        return f"evoforge: {err}"
    return f"reward {value:g} -> expert {session.turns[-1]['expert_id']}, value now {new:+.3f}"
