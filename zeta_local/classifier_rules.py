"""First stage of the prompt classifier: named, weighted rules for `code`, `reason` and `chat`.

Every decision is a sum of named, weighted signals, so a person can read why a prompt went
where it did. Standard library only. Word and phrase signals come from one tokenising pass
and set look-ups; the regex signals are compiled at import and each runs only when the prompt
holds a token or character that could start a match. Only the head and the tail of a long
prompt are scanned, so the cost is bounded whatever its length.

`decide()` returns the rules' task, scores and a raw `strength` (0..1, how much and how
one-sided the evidence is); `zeta_local.classifier` decides whether that is enough, and
calibrates it, or hands the prompt to the learned second stage.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from zeta_local import classifier_jargon

TASKS = ("code", "reason", "chat")  # "embed" is chosen by calling embed(), never here

# The question and any pasted code or trace are almost always near the start or at the very
# end; scanning only those bounds the cost of a 1 MB prompt. The rules and every feature of the
# learned stage read the same text. 1,000 + 500 since feature version 7 (2,000 + 500 before, and
# 1,500 + 500 for the character n-grams): the decision on the slowest 4,000-character prompt
# took ~40 % less, only 117 of the 26,458 tuning prompts are longer, and out of fold the
# classifier was right on 8 more of them (data README, held-out v10, step 3).
HEAD_CHARS = 1000
TAIL_CHARS = 500

# Chat is the default: code or reason must collect at least this much evidence to win,
# so a lone weak word ("function", "why does") leaves a prompt as chat.
CHAT_PRIOR = 1.0

# One programming-jargon term (see classifier_jargon) is this much code evidence.
JARGON_WEIGHT = 0.5

# Evidence at or above this (one code fence, one traceback) is a confident decision on its own.
STRONG_EVIDENCE = 3.0

# With actual code (or an explicit request for code) in the prompt, code beats reason unless
# reason has more than 1/CODE_OVER_REASON times its score: "write a Python function that
# computes a derivative" is a code task even though its math words add up.
CODE_OVER_REASON = 0.5
_HARD_CODE = ("code_fence", "inline_code", "syntax:", "traceback", "stack_frame", "error_name", "crash",
              "compiler_error", "error_line", "code_request")


@dataclass(frozen=True)
class RuleDecision:
    """What the rules found: their task, the fired signals and the evidence behind them."""

    task: str
    signals: tuple[str, ...]  # winner's signals first, heaviest first
    scores: dict[str, float]  # summed signal weights; "chat" includes its prior CHAT_PRIOR
    # 0..1: the winner's evidence over the runner-up's, scaled down when there is little of it.
    # Chat's prior is not evidence: a prompt with no signal at all has strength 0.
    strength: float


_SIGNAL_TASK: dict[str, str] = {}  # signal family ("language:", "code_fence") -> task


def family(signal: str) -> str:
    head, sep, _ = signal.partition(":")
    return head + sep


def task_of(signal: str) -> str:
    return _SIGNAL_TASK.get(family(signal), "chat")


# ------------------------------------------------------------------ tokens
#
# The lower-cased text is split into tokens once (str.translate + split, far cheaper than a
# regex). Tokens keep "-", "+" and "#" ("trade-offs", "c++", "c#") and drop apostrophes
# ("what's" -> "whats"); everything else separates tokens.

_SEPARATORS = "!\"$%&()*,./:;<=>?@[\\]^`{|}~\u201c\u201d\u2018\t\n\r\x0b\x0c"
_TOKEN_TABLE = str.maketrans({**{c: " " for c in _SEPARATORS}, "'": None, "\u2019": None})


# str.translate looks every character up in a dict once the text is not ASCII (10x slower):
# then the curly quotes are replaced first and the rest is translated as UTF-8 bytes, where
# every separator is one byte that no multi-byte character contains.
_ASCII_SEPARATORS = "".join(c for c in _SEPARATORS if c.isascii()).encode()
_BYTE_TABLE = bytes.maketrans(_ASCII_SEPARATORS, b" " * len(_ASCII_SEPARATORS))


def tokenize(lower: str) -> list[str]:
    if lower.isascii():
        return lower.translate(_TOKEN_TABLE).split()
    text = lower.replace("\u2019", "").replace("\u201c", " ").replace("\u201d", " ").replace("\u2018", " ")
    return text.encode("utf-8", "surrogatepass").translate(_BYTE_TABLE, b"'").decode(
        "utf-8", "surrogatepass").split()


# (text, lower, tokens) of the last call, as one tuple so that threads never see a mixed entry.
_last: tuple[str | None, str, list[str]] = (None, "", [])


def lower_and_tokens(text: str) -> tuple[str, list[str]]:
    """text.lower() and its tokens (do not modify), remembered for the last text: the learned
    stage asks for the same text's again."""
    global _last
    last = _last
    if last[0] is text:
        return last[1], last[2]
    lower = text.lower()
    tokens = tokenize(lower)
    _last = (text, lower, tokens)
    return lower, tokens


# ------------------------------------------------------------------ word and phrase signals
#
# Each token, and each 2-4 token phrase whose first word is a known phrase start, is looked
# up here. Families ending in ":" report the word ("language:python"). Ambiguous words ("go",
# "rust", "java", "pandas", "react", "python") are NOT here: they need context (regex rules below).

_WORDS: dict[str, tuple[str, str, float]] = {}  # single token -> (family, task, weight)
# first token -> [(phrase, family, task, weight, its other tokens)]
_PHRASES: dict[str, list[tuple[str, str, str, float, frozenset[str]]]] = {}

# Indirect names reported under the language or tool they stand for.
_ALIASES = {
    "goroutine": "go", "goroutines": "go", "golang": "go", "rustc": "rust", "rustup": "rust",
    "borrow checker": "rust", "jvm": "java", "jdk": "java", "nodejs": "node.js", "node js": "node.js",
    "cpp": "c++", "python2": "python", "python3": "python", "regexp": "regex", "apis": "api",
    "postgresql": "postgres", "cargo": "rust",
}


def _lexicon(family: str, task: str, weight: float, words: str, *, only_new: bool = False) -> None:
    """only_new: skip the entries another lexicon already has (they keep their own family)."""
    _SIGNAL_TASK[family] = task
    for entry in words.split("|"):
        tokens = tokenize(entry.strip().lower())
        if not tokens:
            continue
        phrase = " ".join(tokens)
        if len(tokens) == 1:
            if only_new and (phrase in _WORDS or phrase in _AMBIGUOUS_WORDS):
                continue
            _WORDS[phrase] = (family, task, weight)
        else:
            if only_new and any(p == phrase for p, *_ in _PHRASES.get(tokens[0], ())):
                continue
            _PHRASES.setdefault(tokens[0], []).append((phrase, family, task, weight, frozenset(tokens[1:])))


_lexicon("language:", "code", 1.5,
         "javascript|typescript|c++|c#|cpp|sql|bash|zsh|kotlin|golang|php|html|css|haskell|scala|perl|powershell|"
         "lua|elixir|clojure|fortran|cobol|json|yaml|node js|nodejs|jsx|ocaml|erlang|solidity|verilog|vhdl|f#|"
         "objective-c|groovy|ruby on rails|swiftui|goroutine|goroutines|rustc|rustup|borrow checker|jvm|jdk|"
         "python2|python3")
_lexicon("tool:", "code", 1.5,
         "git|github|gitlab|docker|dockerfile|docker-compose|kubernetes|kubectl|k8s|npm|npx|pytest|unittest|"
         "webpack|curl|wget|vscode|conda|venv|virtualenv|maven|gradle|nginx|postgres|postgresql|mysql|sqlite|"
         "mongodb|redis|flask|django|fastapi|numpy|tensorflow|pytorch|regex|regexp|api|apis|graphql|linux|ssh|"
         "cmake|makefile|llvm|gcc|clang|rails|spring boot|github actions|usestate|useeffect|pip3|jupyter|"
         "pandas dataframe|terraform|helm|systemd|systemctl|yarn|pnpm|node_modules|package.json|bazel|ansible|nvm|"
         "crontab|cron job|ssh-keygen|env var|environment variable|undefined reference|command not found|"
         "bad interpreter|publickey|npm err|unit file|dockerfile")
_lexicon("keyword:", "code", 1.0,
         "unit test|unit tests|compile|compiler|compiling|debug|debugging|debugger|refactor|refactoring|"
         "stack trace|codebase|source code|endpoint|endpoints|backend|frontend|database|linked list|hash map|"
         "hashmap|binary search|recursion|recursive|async|await|callback|mutex|deadlock|coroutine|coroutines|"
         "pull request|merge conflict|repository|programming|programmer|syntax|boolean|runtime|interpreter|"
         "dataframe|variable|variables|array|arrays|script|regular expression|deploy|localhost|bug|code|"
         "rest api|sql query|query|div|flexbox|stdin|stdout|stderr|virtual environment|dict|dicts|tuple|tuples|csv|"
         "vlookup|xlookup|excel formula|spreadsheet formula")
# Everyday phrases built on code words cancel them ("zip code", "stomach bug", "movie script").
# Each phrase contains the keyword it cancels, so code's score never drops below its other evidence.
_lexicon("not_code:", "code", -1.0,
         "zip code|postal code|area code|dress code|promo code|discount code|coupon code|country code|morse code|"
         "qr code|da vinci code|stomach bug|bed bug|bed bugs|bug bite|bug bites|bug spray|movie script|film script|"
         "play script|tv script|video script")
_lexicon("keyword_weak:", "code", 0.5,
         "function|functions|method|loop|algorithm|integer|string|null|undefined|nan|implement|optimize this|"
         "class|lambda|program|library|framework|server")
_lexicon("crash", "code", 3.0,
         "segfault|segmentation fault|core dumped|null pointer|undefined behavior|"
         "undefined behaviour|double free|use-after-free|index out of range|out of bounds|bus error")
# Crash names that everyday speech borrows ("my heart has a memory leak", "a haiku about a kernel
# panic"): evidence for code, but not enough alone for the rules to decide.
_lexicon("fault_term:", "code", 1.5, "memory leak|stack overflow|kernel panic")
_lexicon("math:", "reason", 2.0,
         "countable|uncountable|rational numbers|angle between|celsius|fahrenheit|"
         "solve|solving|prove|proof|integral|integrate|derivative|derivatives|differentiate|equation|equations|"
         "inequality|theorem|lemma|probability|expected value|expected number|induction|irrational|prime number|"
         "factorial|how many ways|permutations|maxima|minima|eigenvalue|eigenvalues|logarithm|square root|"
         "polynomial|quadratic|calculus|compound interest|standard deviation|variance|divisible|limit of|"
         "limit as|converge|converges|modulo|hypotenuse|combinatorics")
_lexicon("math_term:", "reason", 1.0,
         "calculate|compute|sequence|next number|sum of|product of|angles|area of|volume of|perimeter|ratio|"
         "dice|coin flips|infinity|estimate|geometry|algebra|arithmetic|divide|multiply|interest rate|"
         "combinations|elasticity|approaches")
# Everyday words that are only math in company ("the average lifespan", "the odds are").
_lexicon("math_weak:", "reason", 0.5, "average|coin|odds|fraction|triangle|radius")
_lexicon("puzzle:", "reason", 2.0,
         "knights|knaves|knave|weighing|weighings|balance scale|counterfeit|odd one out|different from the rest|"
         "logically consistent|fixed order|tells the truth|tell the truth|starting point|lateral thinking|"
         "switch partners|swap books|trailing zeros|"
         "riddle|puzzle|brain teaser|logic puzzle|truth-teller|truth teller|knights and knaves|always lies|"
         "monty hall|prisoner's dilemma|prisoners dilemma|tower of hanoi|sudoku|who is lying|who is telling the truth")
# "lying" alone is more often about people than about puzzles.
_lexicon("puzzle_weak:", "reason", 0.75, "lying|liar|liars|lies")
_lexicon("analysis:", "reason", 2.0,
         "trade-off|trade-offs|tradeoff|tradeoffs|trade off|trade offs|pros and cons|cost-benefit|cost benefit|"
         "advantages and disadvantages|expected return|causation|what can i conclude|what can we conclude|"
         "does that mean|what else could explain|more likely that|fermi|ballpark|reasonable assumptions|"
         "fewest|minimum number of|maximum number of|roughly how many|approximately how many|estimate how many|"
         "across a river|river crossing")
_lexicon("analysis_term:", "reason", 1.0,
         "compare|comparison|weigh|evaluate|analyze|analyse|analysis|which is better|better option|implications|"
         "optimal|minimize|minimise|maximize|maximise|hypothesis|justify|what would happen if|explain why|"
         "explain how|reasoning|deduce|infer|decide|determine|figure out|is it possible|is it better")
_lexicon("planning:", "reason", 1.5, "strategy|strategies|roadmap|itinerary|prioritize|prioritise")
_lexicon("planning_term:", "reason", 1.0, "how should i|how should we|risks")
_lexicon("creative_writing", "chat", 2.0,
         "screenplay|movie script|film script|play script|tv script|video script")
# Work on a text the user brings (summarise, translate, proofread, continue a story): chat,
# however long the pasted text or whatever numbers are in it.
_lexicon("text_task", "chat", 1.5,
         "summarise|summarize|summarising|summarizing|summary of|translate|translation|proofread|"
         "proofreading|rephrase|paraphrase|reword|rewrite this|rewrite it|make it flow|fix my grammar|"
         "correct my text|continue this story|continue the story|tl dr|tldr|"
         # Editing a text the user pastes, and tasks on a given passage ("extract the names from
         # the text below"): the text is the material, whatever words are in it.
         "summarization|summarisation|shorten this|make this shorter|make it shorter|bullet points|"
         "fix the tone|polish this|tidy this up|clean up this text|edit this|improve this letter|"
         "improve this email|next chapter|the text below|the following text|this text|the passage|"
         "this passage|the following passage|the following paragraph|this paragraph|the paragraph|"
         "the reference text|this article|the following article|the given text|based on the text")
_lexicon("small_talk", "chat", 1.0,
         "how are you|what's your favorite|what's your favourite|what is your favorite|tell me about yourself|"
         "who are you|can we talk|can we just talk|i feel|i'm feeling|i am feeling")


# Programming jargon (tools, packages, commands, error names, concepts; classifier_jargon): each
# term alone is weak evidence, below the chat prior, but it tells the learned stage that the
# prompt speaks the trade even when it never saw that particular tool in training.
_AMBIGUOUS_WORDS = frozenset("go rust java ruby swift c python pandas react cargo".split())
_lexicon("jargon:", "code", JARGON_WEIGHT, classifier_jargon.TOOLS, only_new=True)
_lexicon("jargon:", "code", JARGON_WEIGHT, classifier_jargon.CONCEPTS, only_new=True)
_lexicon("jargon:", "code", JARGON_WEIGHT, classifier_jargon.python_names(), only_new=True)


# ------------------------------------------------------------------ regex signals
#
# Each rule runs its pattern only when the prompt could match: every group in `words` must
# share a token with the prompt, every group in `chars` a character, and one of `subs` must
# be a substring. Set tests cost next to nothing, so most rules are skipped for most prompts.
# A pattern of None means the gate itself is the signal. `case=True` matches the original text
# (SQL keywords, CamelCase error names); otherwise the lower-cased text. Patterns avoid nested
# or overlapping unbounded quantifiers so the cost stays linear in the scanned text.

@dataclass(frozen=True)
class _Rule:
    name: str
    task: str
    weight: float
    # Alternatives, any of which fires the rule: (compiled, at_start). at_start: only tried at
    # position 0 (re.match), the string-start half of a line-anchored pattern (see _line).
    patterns: tuple[tuple[re.Pattern[str], bool], ...]
    words: tuple[frozenset[str], ...]
    chars: tuple[frozenset[str], ...]
    subs: tuple[str, ...]
    case: bool
    reverse: bool = False  # patterns run on haystack[::-1] (a boolean rule only)
    # Cheap necessary conditions: unless one of these matches, none of `patterns` can.
    pre: tuple[re.Pattern[str], ...] = ()


_RULES: list[_Rule] = []


class _Line(str):
    """A pattern that must start at a line start (MULTILINE `^`), written without its `^`."""


class _Reversed(str):
    """A pattern matched against the reversed text (the rule's pattern spelled backwards)."""


def _rule(name: str, task: str, weight: float, pattern: str | _Line | list[str | _Line] | None, *,
          words: tuple[str, ...] = (), chars: tuple[str, ...] = (), subs: tuple[str, ...] = (),
          case: bool = False, flags: int = 0, pre: list[str] | None = None) -> None:
    r"""words: groups of space-separated tokens; chars: groups of characters; subs: substrings (any).

    A list of patterns is their alternation, run as separate searches: each can then start with
    its own literal, which re finds with a fast substring scan instead of trying every position.
    A _Line pattern runs as `\n(?:body)` plus a match at position 0, for the same reason."""
    alternatives = [] if pattern is None else pattern if isinstance(pattern, list) else [pattern]
    compiled: list[tuple[re.Pattern[str], bool]] = []
    reverse = any(isinstance(alt, _Reversed) for alt in alternatives)
    for alt in alternatives:
        if isinstance(alt, _Line):
            compiled.append((re.compile(alt, flags), True))
            compiled.append((re.compile(r"\n(?:" + alt + ")", flags), False))
        else:
            compiled.append((re.compile(alt, flags), False))
    _RULES.append(_Rule(name, task, weight, tuple(compiled),
                        tuple(frozenset(g.split()) for g in words), tuple(frozenset(g) for g in chars),
                        subs, case, reverse, tuple(re.compile(p, flags) for p in pre or ())))
    _SIGNAL_TASK[family(name)] = task


def _top_level(pattern: str) -> list[str]:
    """Split a pattern on its top-level `|` (not inside a group or a character class)."""
    parts, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "]":
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    return parts + [pattern[start:]]


def _lb(alternatives: str, not_after: str = r"\w") -> list[str]:
    r"""`\b(?:a|b)rest` as separate literal-first searches `a(?<!\wa)rest`, `b(?<!\wb)rest`.

    Each alternative is `literal` or `literal<regex>`, where the literal is its leading run of
    letters, digits, spaces and escaped dots; it must not end in a quantified character."""
    out = []
    for alt in _top_level(alternatives):
        m = re.match(r"(?:[A-Za-z0-9_ '!-]|\\\.)+", alt)
        lit = m.group(0)
        if alt[len(lit):len(lit) + 1] in ("?", "*", "+", "{"):
            lit = lit[:-2] if lit.endswith("\\.") else lit[:-1]
        out.append(lit + f"(?<!{not_after}{lit})" + alt[len(lit):])
    return out


_M = re.MULTILINE
_DIGITS = "0123456789"
_AMBIGUOUS = "java rust go ruby swift c"
_EXT_ANY = (r"(?:py|pyi|js|mjs|ts|tsx|jsx|rs|go|java|cpp|cc|hpp|c|h|rb|php|cs|kt|swift|sh|sql|json|ya?ml|toml"
            r"|ini|cfg|lock|csv|ipynb|html|css)")
_EXT_BARE = r"(?:py|js|ts|rs|txt|md|json|ya?ml|csv|sh|env|gitignore|dockerignore)"
_PROG_NOUNS = (r"(?:code|programs?|programming|functions?|method|class|structs?|trait|crate|modules?|compiler|library"
               r"|app|application|project|developer|exception|interface|generics|macro|closure|enum|pointers?|file"
               r"|script|gem|version|stream|channels?|syntax)\b")
_LANG_NAMES = (r"(?:java|rust|go|ruby|swift|c|python|javascript|typescript|c\+\+|c#|kotlin|golang|php|scala"
               r"|haskell|elixir|zig|node(?:\.js)?)")


def _first(alternatives: str, not_after: str = r"\w", group: str = "(?:") -> str:
    """`(?<!not_after)(?:a|b)` written literal-first, as `(?:a|b)(?<!not_after a)(?<!not_after b)`.

    re skips quickly to a pattern's first literal or character set, but tries a leading \\b or
    lookbehind at every position: on a 4,000-character prompt that is the difference between
    a few and a few hundred microseconds. Each alternative must be fixed-width."""
    alts = alternatives.split("|")
    return group + alternatives + ")" + "".join(f"(?<!{not_after}{a})" for a in alts)


_AMBIG_FIRST = _first("java|rust|go|ruby|swift|c", r"[\w.#+-]", "(")
_LANG_FIRST = _first(r"java|rust|go|ruby|swift|c\+\+|c#|c|python|javascript|typescript|kotlin|golang|php|scala"
                     r"|haskell|elixir|zig|node\.js|node", r"[\w.#+-]")

# ---- code: syntax
_rule("code_fence", "code", 3.0, None, chars=("`",), subs=("```",))
_rule("inline_code", "code", 1.5, r"`[^`\n]{1,120}`", chars=("`",))
_rule("syntax:def", "code", 2.5, _Line(r"[ \t]*(?:async[ \t]+)?def[ \t]+\w+[ \t]*\("), words=("def",), flags=_M)
_rule("syntax:class", "code", 2.0,
      _Line(r"[ \t]*(?:(?:public|abstract|export)[ \t]+)*class[ \t]+\w+[ \t]*(?:[:({<]|extends\b|implements\b)"),
      words=("class",), flags=_M)
_rule("syntax:import", "code", 2.5,
      _Line(r"[ \t]*(?:import[ \t]+[\w.]+(?:[ \t]+as[ \t]+\w+)?[ \t]*;?[ \t]*$|from[ \t]+[\w.]+[ \t]+import[ \t]+[\w*(]"
            r"|import[ \t][^\n]{1,80}[ \t]from[ \t]+['\"]|using[ \t]+namespace[ \t]+\w|package[ \t]+[\w.]+;)"),
      words=("import using package",), flags=_M)
_rule("syntax:include", "code", 3.0, r"#include[ \t]*[<\"]", chars=("#",), subs=("#include",))
_rule("syntax:return", "code", 1.5, _Line(r"[ \t]*return\b"), words=("return",), flags=_M)
_rule("syntax:function", "code", 2.5,
      _lb(r"function[ \t]*\w*[ \t]*\([^)\n]{0,80}\)[ \t]*\{|func[ \t]+\w+\(|fn[ \t]+\w+[ \t]*[<(]"),
      words=("function func fn",), chars=("(",))
_rule("syntax:arrow", "code", 1.5, None, chars=(">",), subs=("=>",))
_rule("syntax:sql", "code", 2.5, _lb(r"SELECT\b[^;]{1,200}?\bFROM\b"), words=("select", "from"), case=True)
_rule("syntax:sql", "code", 2.5,
      _lb(r"INSERT\s+INTO\b|DELETE\s+FROM\b|CREATE\s+TABLE\b|ALTER\s+TABLE\b|GROUP\s+BY\b"
          r"|ORDER\s+BY\b|INNER\s+JOIN\b|LEFT\s+JOIN\b|UPDATE\s+\w+\s+SET\b"),
      words=("insert update delete create alter group order join",), case=True)
_rule("syntax:declaration", "code", 2.0,
      _Line(r"[ \t]*(?:const|let|var|int|char|float|double|auto|bool|void|long|unsigned|static|public|private)"
            r"[ \t]+[\w*&<>\[\], ]{1,60}?[ \t]*(?:=[^;\n]{0,200};|;|\([^)\n]{0,80}\)[ \t]*\{)"),
      words=("const let var int char float double auto bool void long unsigned static public private",),
      chars=(";",), flags=_M)
_rule("syntax:braces_semicolons", "code", 2.0, r";[ \t]*\n[^\n{};]{0,200}[{}]|[{}][^\n{};]{0,200};[ \t]*$",
      chars=("{}", ";"), flags=_M)
_rule("syntax:indented_block", "code", 2.0, r"[:{][ \t]*\r?\n(?:\t|[ ]{2,})\S", chars=("\n", ":{"))
_rule("syntax:assignments", "code", 2.0,
      _Line(r"[ \t]*[a-z_][\w.\[\]]*[ \t]*=[^=\n]*\n[ \t]*[a-z_][\w.\[\]]*[ \t]*=[^=]"), chars=("=", "\n"), flags=_M)
_rule("syntax:print", "code", 1.5, _lb(r"print\(|printf\(|println!?\(|console\.log\(|puts\(|echo\(", r"[\w.]"),
      words=("print printf println println! console puts echo",), chars=("(",))
# `\b[a-z_]\w*\.[a-z_]\w*\(|\b[a-z_]\w*\(\)` on the reversed text, where it starts at the parenthesis.
_rule("syntax:method_call", "code", 1.0,
      [_Reversed(r"\(\w*[a-z_]\.\w*[a-z_]\b"), _Reversed(r"\)\(\w*[a-z_]\b")], chars=("(",))
_rule("syntax:operator", "code", 1.0, r"==|!=|&&|\|\||\+=|-=|::|->[ \t]*[\w{(]", chars=("=&|:>",))
_rule("syntax:loop", "code", 2.0,
      _lb(r"for[ \t]+\w+[ \t]+in[ \t]+(?:range|enumerate|zip)\(|for[ \t]*\([^)\n]{0,80};"
          r"|while[ \t]*\([^)\n]{0,80}\)[ \t]*\{"), words=("for while",), chars=("(",))
_rule("syntax:shell", "code", 2.0, _Line(r"[ \t]*\$[ \t]+[a-z]"), chars=("$",), flags=_M)
_rule("syntax:shell", "code", 2.0, _lb(r"sudo[ \t]+\w|chmod[ \t]+|grep[ \t]+-|apt(?:-get)?[ \t]+install\b"),
      words=("sudo chmod grep apt apt-get",))
_rule("syntax:cli_flag", "code", 1.0, r"--(?<!\S--)[a-z][\w-]+", chars=("-",), subs=("--",))
# A short option on its own ("what does -p do on mkdir", "tar -xzvf"): 170 tuning prompts, all
# code but one.
_rule("syntax:short_flag", "code", 1.0, r"-(?<![^ \t\n`(]-)[a-z]{1,4}(?=$|[ \t\n`,.?)])", chars=("-",))
_rule("syntax:html", "code", 2.0,
      r"</?(?:div|span|html|body|head|script|ul|li|table|form|input|button|p|a)\b[^<>\n]{0,80}>", chars=("<",))
# Matched from the dot, so a long run of word characters is never re-scanned from every start.
_rule("file_extension", "code", 1.5, r"\.(?:(?<=[a-z0-9_-]\.)" + _EXT_ANY + r"|(?<![\w.]\.)" + _EXT_BARE + r")\b",
      chars=(".",))

# ---- code: traces and errors
_rule("traceback", "code", 4.0, None, words=("traceback",), subs=("traceback (most recent call last)",))
_rule("stack_frame", "code", 3.0,
      [_Line(r"[ \t]+at [\w$.<>]+\([\w.]*(?::\d+)?\)"), *_lb(r"file \"[^\"\n]{1,200}\", line \d+")],
      words=("at file",), chars=("(\"",), flags=_M)
# `\b[A-Z][A-Za-z0-9]*(?:Error|Exception)\b`, matched on the reversed text so that it starts with
# the literal ("rorrE"): forwards it would be tried at every capital letter's position.
_rule("error_name", "code", 3.0, [_Reversed(f"{w}(?<!\\w{w})[A-Za-z0-9]*[A-Z]\\b") for w in ("rorrE", "noitpecxE")],
      subs=("Error", "Exception"), case=True)
_rule("compiler_error", "code", 3.5, _Line(r"[\w./\\-]+:\d+(?::\d+)?:[ \t]*(?:fatal[ \t]+)?(?:error|warning)\b"),
      words=("error warning",), chars=(":",), flags=_M)
_rule("error_line", "code", 2.0,
      _Line(r"[ \t]*(?:npm err!|err!|error(?:\[e\d+\])?:|fatal:|warning:|error (?=found|command))"),
      words=("err error fatal warning",), flags=_M)
_rule("error_message", "code", 1.0,
      _lb(r"error:\s|exit(?:s|ed)?\s+(?:\w+\s+){0,2}(?:with\s+)?(?:code|status)\s+\d+"),
      words=("error exit exits exited",))

# ---- code: ambiguous language and tool names, which need context
# "java" (coffee, island), "go", "rust", "ruby", "swift", "c": next to a programming noun, after
# "learn"/"written in", or next to another language name ("go or rust").
# One rule per context, each behind its own gate, the common ones written literal-first (_first).
# Split into one search per word: a match (word, blanks, noun) holds no other match's start, so
# the separate searches find the same words as the one alternation.
# Each word's rules are gated on that word's own token: "go" is common English, and a search
# for "c" would otherwise try every "c" of a long prompt whenever any of the six occurs.
for _w in _AMBIGUOUS.split():
    _rule("language:", "code", 1.5, f"({_w})(?<![\\w.#+-]{_w})[ \\t]+" + _PROG_NOUNS, words=(_w,))
_rule("language:", "code", 1.5,
      [a + r"[ \t]+(java|rust|go|ruby|swift)\b"
       for a in _lb(r"learn(?:ing)?|written[ \t]+in|programming[ \t]+in|coding[ \t]+in|using")],
      words=("learn learning written programming coding using", _AMBIGUOUS))
_rule("language:", "code", 1.5, r"(java)(?<!\wjava)\.\w", words=("java",))
_rule("language:", "code", 1.5,
      [r"(cargo)(?<!\wcargo)[ \t]+(?:build|run|test|add)\b", r"(go)(?<!\wgo)[ \t]+(?:mod|fmt|vet)\b"],
      words=("cargo go",))
# "go or rust", "python vs c": an ambiguous name right before the connective (forwards, from
# the name), or right after it with a plain language name before it (on the reversed text, so
# that the search also starts at the ambiguous name). Either way gated on the name's token.
_CONNECTIVE = r"[ \t]+(?:or|and|vs\.?|versus)[ \t]+"
_CONNECTIVE_REV = r"[ \t]+(?:ro|dna|\.?sv|susrev)[ \t]+"
_PLAIN_LANGS_REV = "|".join(n[::-1].replace(".", r"\.").replace("+", r"\+")
                            for n in "c++ c# python javascript typescript kotlin golang php scala haskell elixir zig "
                                     "node.js node".split())
for _w in _AMBIGUOUS.split():
    _rule(f"language:{_w}", "code", 1.5, f"{_w}(?<![\\w.#+-]{_w})" + _CONNECTIVE + _LANG_NAMES + r"(?![\w+#])",
          words=(_w, "or and vs versus"))
    _rule(f"language:{_w}", "code", 1.5,
          _Reversed(f"{_w[::-1]}(?<![\\w+#]{_w[::-1]})" + _CONNECTIVE_REV + f"(?:{_PLAIN_LANGS_REV})(?![\\w.#+-])"),
          words=(_w, "or and vs versus"))
# After a bare "in" ("in Java?") the weight stays below the chat prior: it could be the island.
for _w in _AMBIGUOUS.split():  # started at the name, with "in" and one or two blanks behind it
    _rule("language_hint:", "code", 0.75,
          f"({_w})(?:" + "|".join(f"(?<=\\bin{b}{_w})" for b in (" ", "\t", "  ", " \t", "\t ", "\t\t"))
          + r")(?=[ \t]*[,.?!]|[ \t]*$)", words=("in", _w), flags=_M)
# One search per branch: no branch's match holds another's start.
_rule("tool:", "code", 1.5,
      [f"({w})(?<!\\w{w})[ \\t]+(?:install|uninstall|add|freeze)\\b" for w in ("pip", "yarn", "brew", "apt")]
      + [r"(react)(?<!\wreact)[ \t]+(?:components?|hooks?|app|native|router|state|props)\b",
         r"(pandas)(?<!\wpandas)\b(?=[^\n]{0,40}\b(?:df|dataframe|groupby|series|read_csv|merge)\b)"],
      words=("pip yarn brew apt react pandas",))
# "jest" is the test runner in company of testing words (in Polish it is "is").
_rule("tool:jest", "code", 1.5, None,
      words=("jest", "test tests testing mock mocks mocked spec specs describe expect snapshot snapshots npm yarn "
                     "config coverage js ts typescript javascript react vitest unit"))
# "commit" is git vocabulary with a determiner, but not "commit to ..." (a promise).
_rule("keyword:", "code", 1.0,
      r"(commit)(?:" + "|".join(f"(?<=\\b{d} commit)" for d in
                                 ("last", "the", "a", "my", "previous", "this", "that", "initial", "merge"))
      + r")s?\b(?! to\b)",
      words=("commit commits",))
# An explicit request to produce code ("write a Python function that ...").
_rule("code_request", "code", 2.0,
      [a + r"(?: me)? (?:a |an |the |some )?"
       r"(?:[\w+#.-]+ ){0,3}?(?:function|script|program|class|method|sql query|query|regex|unit tests?|module|cli"
       r"|endpoint|snippet|dockerfile|makefile|workflow|unit file|config file|one-liner|cron job)s?\b"
       for a in _lb("write|implement|create|build|generate|give me|show me|code up|need")],
      words=("write implement create build generate give show code need",))

# ---- reason: math notation
# `[\w)][ \t]*[-+*/^][ \t]*[\w(][^=\n]{0,40}?(?<![=!<>])=(?!=)[ \t]*-?[\w(]` ("2x + 3 = 7"), matched
# on the reversed text so that the search starts at the "=" (forwards it started at every
# blank of the prompt); what follows the "=" (up to two blanks and a minus) is checked behind it.
_rule("math:equation", "reason", 2.0,
      _Reversed("=(?:" + "|".join(f"(?<=[\\w(]{m}{b}=)" for m in ("", "-") for b in ("", "[ \t]", "[ \t]{2}"))
                + r")(?![=!<>])[^=\n]{0,40}?[\w(][ \t]*[-+*/^][ \t]*[\w)]"),
      chars=("=", "+-*/^"))
# The same forwards, for three or more blanks after the "=" (rare): behind a check for them.
_EQUATION_REST = r"[ \t]*[\w(][^=\n]{0,40}?(?<![=!<>])=(?!=)[ \t]*-?[\w(]"
_rule("math:equation", "reason", 2.0,
      [r"[-+*/^](?<=[\w)][-+*/^])" + _EQUATION_REST, r"[ \t](?<=[\w)][ \t])[ \t]*[-+*/^]" + _EQUATION_REST],
      chars=("=", "+-*/^"), pre=[r"=[ \t]{3}"])
# `\d(?<![\w.$]\d)\d*[xyzn](?!\w)` ("3x", "12n"), on the reversed text: started at the letter,
# not at every digit.
_rule("math:variable_term", "reason", 1.0, _Reversed(r"[xyzn](?<!\w[xyzn])\d+(?![\w.$])"),
      chars=("xyzn", _DIGITS))
_rule("math:exponent", "reason", 1.5, r"\^(?<=[\w)]\^)[\w(-]", chars=("^",))
_rule("math:exponent", "reason", 1.5, None, chars=("²³",))
_rule("math:function_notation", "reason", 2.0,
      [f"{c}(?<![\\w.]{c})[ \\t]*\\([a-z0-9+\\-*/ ]{{1,15}}\\)" for c in "fgh"],
      words=("f g h",), chars=("(",))
_rule("math:elementary_function", "reason", 1.5,
      [a + r"[ \t]*\(" for a in _lb("sin|cos|tan|log|ln|sqrt|exp", r"[\w.]")],
      words=("sin cos tan log ln sqrt exp",), chars=("(",))
_rule("math:symbols", "reason", 2.0, None, chars=("∫∑∏√π∞≤≥≠±∂",))
# A slash between numbers is division, except in a date or a version (05/01/2024, 1/2/3).
_rule("arithmetic", "reason", 1.5,
      r"\d(?:[ \t]*[+*×÷^][ \t]*\(?\d|(?<![\d/]\d)\d*[ \t]*/[ \t]*\d+(?![\d/])|[ \t]+-[ \t]+\d)",
      chars=(_DIGITS, "+*/×÷^-"),
      # Started at the operator: cheap, where the pattern tries every digit of the prompt.
      pre=[r"[+*×÷^](?<=[\d \t][+*×÷^])[ \t]*\(?\d", r"/(?<=[\d \t]/)[ \t]*\d", r"-(?<=[ \t]-)[ \t]+\d"])
_rule("percent", "reason", 1.0, _Reversed(r"%[ \t]*(?:\d+\.)?\d"), chars=("%",))  # \d(?:\.\d+)?[ \t]*%
_rule("percent", "reason", 1.0, None, words=("percent percentage",))

# ---- reason: explicit reasoning, puzzles, planning, word problems
_rule("step_by_step", "reason", 2.5,
      _lb(r"step[- ]by[- ]step\b|show (?:your|the|all)(?: of your)? work"
          r"|think (?:it |this )?(?:through|out)\b|reason (?:it |this )?(?:through|out)\b"
          r"|work (?:it |this )?(?:through|out)\b"
          r"|walk (?:me |us )?through\b|explain (?:your|the) reasoning\b|let'?s think\b|justify your answer\b"
          r"|chain of thought\b"),
      words=("step-by-step step show think reason work walk explain lets justify chain",))
_rule("puzzle_constraint", "reason", 1.5,
      _lb(r"you (?:may|can) only\b"
          r"|you (?:may|can) (?:take|ask|open|pick|choose|weigh|move) (?:only )?(?:one|a single)\b"
          r"|only one (?:question|move|weighing|trip)\b|you can (?:only )?\w+ (?:once|twice)\b"
          + "".join(f"|{w} (?:only )?(?:one|two|three|four|\\d+)"
                    r" (?:weighings?|moves?|questions?|tries|attempts|trips)\b" for w in ("with", "in", "using"))),
      words=("you only weighing weighings move moves question questions tries attempts trips",))
_rule("logic:syllogism", "reason", 1.5,
      _lb(r"all \w+ are \w+[^.?!\n]{0,60}\b(?:all|are|is|therefore|definitely|must|necessarily)\b"),
      words=("all", "are"))
_rule("logic:conditional", "reason", 1.0, _lb(r"if\b[^.?!\n]{1,80}\b(?:then|otherwise)\b"),
      words=("if", "then otherwise"))
# "plan" as a verb ("plan a trip", "draft a plan"), not the noun after an article.
_rule("planning:", "reason", 1.5,
      r"(plan)(?<!\wplan)(?<!\bthe plan)(?<!\ba plan)(?<!\bmy plan)(?<!\bour plan)(?<!\byour plan)"
      r" (?:a|an|my|our|the|out)\b", words=("plan",))
_rule("planning:", "reason", 1.5,
      [a + r" (?:a |an |me a )?(?:\w+[- ]){0,2}(plan)\b" for a in _lb("make|create|draft|outline|write|build")],
      words=("plan", "make create draft outline write build"))
_rule("why_question", "reason", 0.75, _lb(r"why (?:does|do|is|are|did|would|can't|doesn't|isn't)\b"),
      words=("why",))
# `\b(?:a|the) <vehicle> <verb>`, started at the vehicle with the article checked behind it.
_rule("word_problem", "reason", 2.0,
      [f"{v} (?:(?<=\\ba {v} )|(?<=\\bthe {v} ))(?:leaves|departs|travels)\\b"
       for v in ("train", "car", "boat", "plane", "bus", "cyclist", "runner")]
      + [r"\d[ \t]*(?:mph|km/h|kph|miles per hour)\b"], words=("mph km kph miles leaves departs travels",))

# Ordering and seating puzzles: "who is the shortest?", "Dan is not at either end".
_rule("puzzle:ordering", "reason", 2.0,
      _lb(r"who(?: is| was)? (?:the )?(?:shortest|tallest|oldest|youngest|fastest|slowest|heaviest|lightest)\b"
          r"|who (?:came|finished|sits|is sitting) (?:first|last|in the middle)\b"), words=("who",))
_rule("puzzle:ordering", "reason", 2.0,
      _lb(r"either end\b|next to each other\b|sit next to\b|sits next to\b|directly to the (?:left|right)\b"
          r"|round table\b|in a row\b"), words=("end each sit sits directly round row",))
_rule("puzzle:comparison", "reason", 1.0,
      _lb("|".join(f"{w} than\\b" for w in "taller shorter older younger heavier lighter faster slower".split())
          + r"|which (?:weighs more|is heavier)"),
      words=("than which",))
# Classic riddle form: "what has keys but can't open locks", "what gets wetter the more it dries".
_rule("puzzle:riddle_form", "reason", 2.0,
      _lb(r"what (?:has|have|goes|gets|can|comes|is)\b[^?.\n]{0,60}\b(?:but|the more)\b"), words=("what", "but more"))
# "... What am I?" closing a prompt is a riddle (29 of 29 such tuning prompts); "what am I doing
# wrong" is not, so the question must end the prompt.
_rule("puzzle:riddle_form", "reason", 2.0, _lb(r"what am i[ \t]*[?.!]*\s*\Z|who am i[ \t]*[?.!]*\s*\Z"),
      words=("am",))
_rule("multiple_choice", "reason", 1.5, _Line(r"options:[ \t]*\n[ \t]*(?:\([a-e]\)|- )"), words=("options",),
      flags=_M)
_rule("tool:", "code", 1.5, r"(port)(?<!\wport)[ \t]+\d{2,5}\b", words=("port",))
_rule("language:", "code", 1.5, _Line(r"(java|rust|go|ruby|swift|c)[ \t]*[:,-]"), words=(_AMBIGUOUS,), flags=_M)

# ---- chat
_rule("creative_writing", "chat", 2.0,
      [a + r"(?: me| us)? (?:a |an |some |the )?(?:\w+[ \t]+){0,2}?"
       r"(?:poem|haiku|limerick|sonnet|story|stories|song|lyrics|joke|jokes|email|letter|essay|toast|speech|message"
       r"|tweet|caption|slogan|bio|wedding vows|eulogy)\b(?![ \t]+(?:validator|parser|address|regex|client|server|api))"
       for a in _lb("write|compose|draft|give me|tell me|create|make up|rewrite|rework|redo|reword|polish")],
      words=("write compose draft give tell create make rewrite rework redo reword polish",))
_rule("creative_writing", "chat", 2.0, None,
      words=("poem poems haiku haikus limerick limericks sonnet sonnets lyrics fairy",))

# Index each rule under its first gate, so a prompt only visits the rules it could trigger.
# Rules gated only by substrings (case-sensitive ones) are always candidates.
_BY_TOKEN: dict[str, list[int]] = {}
_BY_CHAR: dict[str, list[int]] = {}
_ALWAYS: list[int] = []
for _i, _r in enumerate(_RULES):
    if _r.words:
        for _key in _r.words[0]:
            _BY_TOKEN.setdefault(_key, []).append(_i)
    elif _r.chars:
        for _key in _r.chars[0]:
            _BY_CHAR.setdefault(_key, []).append(_i)
    else:
        _ALWAYS.append(_i)

# Set & set iterates the smaller operand; intersecting with a dict would walk the whole dict.
_WORD_KEYS = frozenset(_WORDS)
_PHRASE_KEYS = frozenset(_PHRASES)
_TOKEN_KEYS = frozenset(_BY_TOKEN)
_CHAR_KEYS = frozenset(_BY_CHAR)

# ---- computed signals (not a single regex)
_GREETING = re.compile(r"(?:hi|hello|hey|howdy|yo|hiya|good (?:morning|afternoon|evening|night)|thanks|thank you|thx"
                       r"|ok|okay|bye|goodbye|cheers|nice to meet you)\b")
# "python" with its version and a programming noun after it; group 1: the noun. The article
# before it is checked by _after_article, so that the pattern starts with its literal.
_PYTHON = re.compile(r"python(?<![\w.]python)(?:[ \t]?[23](?:\.\d+)?)?(?![\w])([ \t]+" + _PROG_NOUNS + ")?")
_WORD_OR_DOT = re.compile(r"[\w.]")


def _after_article(lower: str, end: int) -> bool:
    """Whether lower[:end] ends with `(?<![\\w.])(?:a|the)[ \\t]+`."""
    j = end
    while j > 0 and lower[j - 1] in " \t":
        j -= 1
    if j == end:
        return False
    for article in ("a", "the"):
        start = j - len(article)
        if start >= 0 and lower.startswith(article, start) and (start == 0 or not _WORD_OR_DOT.match(lower, start - 1)):
            return True
    return False

_SNAKE_WORDS = frozenset("snake snakes reptile reptiles pythons zoo serpent serpents".split())
_NUMBER = re.compile(r"\d(?<![\w.]\d)\d*(?:[.,]\d+)*")  # (?<![\w.])\d+(?:[.,]\d+)*, digit first
_HOW_QUANTITY = re.compile(r"how(?<!\whow) (?:much|many|long|far|old|fast)\b")
_SIGNAL_TASK.update({"greeting": "chat", "numbers": "reason", "quantity_question": "reason",
                     "override:": "code", "language:": "code"})


def scan_text(prompt: str) -> str:
    """The prompt itself, or past HEAD_CHARS + TAIL_CHARS characters its first HEAD_CHARS and
    last TAIL_CHARS of them."""
    if len(prompt) <= HEAD_CHARS + TAIL_CHARS:
        return prompt
    return prompt[:HEAD_CHARS] + "\n" + prompt[-TAIL_CHARS:]


def _collect(text: str) -> dict[str, tuple[str, float]]:
    """Return every fired signal -> (task, weight). Each signal counts once however often it matches."""
    lower, tokens = lower_and_tokens(text)
    token_set = set(tokens)
    char_set = set(lower)
    fired: dict[str, tuple[str, float]] = {}

    def add(signal: str, task: str, weight: float) -> None:
        if signal not in fired or fired[signal][1] < weight:
            fired[signal] = (task, weight)

    # Words, then phrases (only those whose first word occurs, matched on the joined tokens).
    for token in token_set & _WORD_KEYS:
        family, task, weight = _WORDS[token]
        add(family + _ALIASES.get(token, token) if family.endswith(":") else family, task, weight)
    firsts = token_set & _PHRASE_KEYS
    if firsts:
        joined = " " + " ".join(tokens) + " "
        for first in firsts:
            for phrase, family, task, weight, rest in _PHRASES[first]:
                # Every word of the phrase must occur before the (dearer) search for the phrase.
                if rest <= token_set and " " + phrase + " " in joined:
                    add(family + _ALIASES.get(phrase, phrase) if family.endswith(":") else family, task, weight)

    # Regex rules: only those indexed under a token or character of this prompt, then the rest of
    # each gate (plain loops: generator expressions here would cost more than the regexes).
    candidates = set(_ALWAYS)
    for token in token_set & _TOKEN_KEYS:
        candidates.update(_BY_TOKEN[token])
    for char in char_set & _CHAR_KEYS:
        candidates.update(_BY_CHAR[char])
    for index in sorted(candidates):
        rule = _RULES[index]
        if rule.name in fired and fired[rule.name][1] >= rule.weight:
            continue  # fired already, as strongly (by a word, a phrase or an earlier rule)
        gated = False
        for group in rule.words:
            if token_set.isdisjoint(group):
                gated = True
                break
        if gated:
            continue
        for group in rule.chars:
            if char_set.isdisjoint(group):
                gated = True
                break
        if gated:
            continue
        haystack = text if rule.case else lower
        if rule.subs:
            for sub in rule.subs:
                if sub in haystack:
                    break
            else:
                continue
        if rule.pre:
            for pattern in rule.pre:
                if pattern.search(haystack) is not None:
                    break
            else:
                continue
        if not rule.patterns:
            add(rule.name, rule.task, rule.weight)
        elif rule.name.endswith(":"):
            for pattern, at_start in rule.patterns:
                for m in ((pattern.match(haystack),) if at_start else pattern.finditer(haystack)):
                    if m is None:
                        continue
                    word = next((g for g in m.groups() if g), m.group(0)).lower()
                    add(rule.name + _ALIASES.get(word, word), rule.task, rule.weight)
        else:
            if rule.reverse:
                haystack = haystack[::-1]
            for pattern, at_start in rule.patterns:
                if (pattern.match(haystack) if at_start else pattern.search(haystack)) is not None:
                    add(rule.name, rule.task, rule.weight)
                    break

    # "python" is the language unless snakes are the topic or it follows an article
    # without a programming noun after it ("a python sleeping in the sun").
    if "python" in token_set and token_set.isdisjoint(_SNAKE_WORDS):
        for m in _PYTHON.finditer(lower):
            if m.group(1) or not _after_article(lower, m.start()):
                add("language:python", "code", 1.5)
                break

    if tokens and _GREETING.match(" ".join(tokens[:4])):
        add("greeting", "chat", 1.0)

    if not char_set.isdisjoint(_DIGITS):
        # Only "at least 2" and "at least 3" matter: stop at the third number rather than list
        # every one (a 4,000-character paste of code or data holds dozens; 20-30 µs saved).
        numbers = sum(1 for _ in itertools.islice(_NUMBER.finditer(lower), 3))
        if numbers >= 3:
            add("numbers", "reason", 1.0)
        if numbers >= 2 and _HOW_QUANTITY.search(lower):
            add("quantity_question", "reason", 2.0)

    # A hinted language that also fired with context is counted once, at the higher weight.
    for sig in [s for s in fired if s.startswith("language_hint:")]:
        if "language:" + sig.partition(":")[2] in fired:
            del fired[sig]
    return fired


def strength(task: str, scores: dict[str, float]) -> float:
    """Separation from the runner-up, scaled down when the win rests on little evidence.

    Chat's prior only decides whether code/reason evidence is enough; it counts neither for
    chat nor against the others, so a prompt without signals has strength 0, and one strong
    signal (a code fence, a traceback) with nothing against it has strength 1.
    """
    evidence = {t: s - CHAT_PRIOR if t == "chat" else s for t, s in scores.items()}
    top = evidence[task]
    if top <= 0:
        return 0.0
    if task == "code" and evidence["reason"] > top:  # won through CODE_OVER_REASON: contested
        return round(top / (top + evidence["reason"]) * min(1.0, top / STRONG_EVIDENCE), 3)
    second = max(e for t, e in evidence.items() if t != task)
    return round(max(0.0, min(1.0, (top - second) / top * min(1.0, top / STRONG_EVIDENCE))), 3)


def decide(text: str) -> RuleDecision:
    """Apply the rules to already-scanned text (see scan_text)."""
    if not text.strip():
        return RuleDecision("chat", (), {"code": 0.0, "reason": 0.0, "chat": CHAT_PRIOR}, 0.0)
    fired = _collect(text)

    code = reason = 0.0
    chat = CHAT_PRIOR
    hard_code = False
    for signal, (owner, weight) in fired.items():
        if owner == "code":
            code += weight
            hard_code = hard_code or signal.startswith(_HARD_CODE)
        elif owner == "reason":
            reason += weight
        else:
            chat += weight
    scores = {"code": round(code, 3), "reason": round(reason, 3), "chat": round(chat, 3)}

    # Highest score wins; ties go to the more specific task (code, then reason, then chat).
    task = "code" if code >= reason and code >= chat else "reason" if reason >= chat else "chat"
    if task == "reason" and hard_code and code >= CHAT_PRIOR and code >= CODE_OVER_REASON * reason:
        task = "code"
        fired["override:code_over_reason"] = ("code", 0.0)

    # The winner's signals first, heaviest first, then the outweighed ones.
    signals = tuple(sorted(fired, key=lambda s: (fired[s][0] != task, -fired[s][1], s)))
    return RuleDecision(task, signals, scores, strength(task, scores))
