// Shell completion scripts for bash, zsh and fish, generated from the command
// table they are given.

import { UsageError } from "./args.ts";
import type { Commands, CommandSpec, Completion } from "./spec.ts";

/** What completions need of a command: `help` has no entry in the table, and completes too. */
type Completing = Readonly<Record<string, Pick<CommandSpec, "summary" | "options" | "arguments">>>;

/** The completion script for `shell`, from the table. */
export function completionScript(shell: string | undefined, table: Commands): string {
  const commands: Completing = {
    ...table,
    help: {
      summary: "Show the help, or a command's",
      options: {},
      arguments: { name: "command", complete: Object.keys(table) },
    },
  };
  switch (shell) {
    case "bash":
      return bashCompletion(commands);
    case "zsh":
      return zshCompletion(commands);
    case "fish":
      return fishCompletion(commands);
    default:
      throw new UsageError(
        shell === undefined
          ? "Missing the shell: bash, zsh or fish"
          : `Unknown shell "${shell}" (expected bash, zsh or fish)`,
        "completions",
      );
  }
}

/** Every option that completes to something, once, with what it completes to. */
function completingOptions(commands: Completing): Map<string, Completion> {
  const options = new Map<string, Completion>();
  for (const spec of Object.values(commands)) {
    for (const [name, option] of Object.entries(spec.options)) {
      if (option.complete !== undefined) options.set(name, option.complete);
    }
  }
  return options;
}

function bashCompletion(commands: Completing): string {
  const names = Object.keys(commands).join(" ");
  const completing = [...completingOptions(commands)];
  const files = completing.filter(([, values]) => values === "files").map(([name]) => `--${name}`);
  const lists = completing.filter(([, values]) => values !== "files").map(([name, values]) =>
    `    --${name}) COMPREPLY=($(compgen -W "${
      (values as readonly string[]).join(" ")
    }" -- "$cur")); return ;;`
  );
  if (files.length > 0) {
    lists.push(`    ${files.join("|")}) COMPREPLY=($(compgen -f -- "$cur")); return ;;`);
  }
  const cases = Object.entries(commands).map(([name, spec]) =>
    `    ${name}) words="${Object.keys(spec.options).map((option) => `--${option}`).join(" ")}" ;;`
  );
  const positionals = Object.entries(commands).flatMap(([name, spec]) =>
    spec.arguments === undefined ? [] : spec.arguments === "command"
      ? [
        `[[ \${COMP_WORDS[1]} == ${name} ]] && _worktree_ports_command_at ${
          valueOptions(spec)
        }; then
    # The command and its arguments complete as that command's own do.
    if declare -F _command_offset >/dev/null; then
      _command_offset $at
    elif (( COMP_CWORD == at )); then
      COMPREPLY=($(compgen -c -- "$cur"))
    else
      COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return`,
      ]
      : [`[[ \${COMP_WORDS[1]} == ${name} && $COMP_CWORD -eq 2 ]]; then
    words="${spec.arguments.complete.join(" ")}"`]
  );
  const positional = positionals.length === 0
    ? ""
    : `  if ${positionals.join("\n  elif ")}\n  fi\n`;
  return `# bash completion for worktree-ports: eval "$(worktree-ports completions bash)"
# Sets "at" to where the command of exec starts (after its options, or "--"),
# and succeeds when the word being completed is part of that command.
_worktree_ports_command_at() {
  local word
  at=2
  while (( at < COMP_CWORD )); do
    word=\${COMP_WORDS[at]}
    if [[ $word == -- ]]; then (( at++ )); break
    elif [[ " $* " == *" $word "* ]]; then (( at += 2 ))
    elif [[ $word == -* ]]; then (( at++ ))
    else break
    fi
  done
  (( COMP_CWORD > at )) || [[ \${COMP_WORDS[COMP_CWORD]} != -* || \${COMP_WORDS[at-1]} == -- ]] &&
    (( COMP_CWORD >= at ))
}
_worktree_ports() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} words at
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W "${names} --help --version" -- "$cur"))
    return
  fi
  case $prev in
${lists.join("\n")}
  esac
  case \${COMP_WORDS[1]} in
${cases.join("\n")}
  esac
${positional}  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _worktree_ports worktree-ports
`;
}

function zshCompletion(commands: Completing): string {
  const quote = (text: string) => `'${text.replaceAll("'", `'\\''`)}'`;
  const describe = (text: string) =>
    text.replaceAll(":", "\\:").replaceAll("[", "\\[").replaceAll("]", "\\]");
  const names = Object.entries(commands).map(([name, spec]) =>
    `    ${quote(`${name}:${describe(spec.summary)}`)}`
  );
  const cases = Object.entries(commands).map(([name, spec]) => {
    const options = Object.entries(spec.options).map(([option, { help, type, complete }]) => {
      const action = complete === "files"
        ? ":file:_files"
        : complete !== undefined
        ? `:${option}:(${complete.join(" ")})`
        : type === "string"
        ? `:${option}: `
        : "";
      return quote(`--${option}[${describe(help)}]${action}`);
    });
    if (spec.arguments === "command") {
      // Past its options (or "--"), the words are a command line of their
      // own, completed as that command's: by hand, since _arguments' "*::"
      // does not take "--" for the end of the options.
      const skips = valueOptions(spec).split(" ").filter(Boolean);
      return `    ${name})
      local at=2
      while (( at < CURRENT )); do
        case \${words[at]} in
          --) (( at++ )); break ;;
${
        skips.length > 0
          ? `          ${skips.join("|")}) (( at += 2 )) ;;
`
          : ""
      }          -*) (( at++ )) ;;
          *) break ;;
        esac
      done
      if (( CURRENT > at )) || [[ \${words[CURRENT]} != -* || \${words[at-1]} == -- ]] && (( CURRENT >= at )); then
        words=(\${words[at,-1]})
        (( CURRENT -= at - 1 ))
        _normal
      else
        _arguments ${options.join(" ")}
      fi ;;`;
    }
    const extra = spec.arguments === undefined
      ? ""
      : ` ${quote(`1:${spec.arguments.name}:(${spec.arguments.complete.join(" ")})`)}`;
    return `    ${name}) _arguments ${options.join(" ")}${extra} ;;`;
  });
  return `#compdef worktree-ports
# zsh completion for worktree-ports: source <(worktree-ports completions zsh), after compinit
_worktree_ports() {
  local -a commands
  commands=(
${names.join("\n")}
  )
  if (( CURRENT == 2 )); then
    _describe command commands
    return
  fi
  words=(\${words[2,-1]})
  (( CURRENT-- ))
  case \${words[1]} in
${cases.join("\n")}
  esac
}
if [[ \${funcstack[1]} == _worktree_ports ]]; then
  _worktree_ports "$@"
else
  compdef _worktree_ports worktree-ports
fi
`;
}

function fishCompletion(commands: Completing): string {
  const quote = (text: string) => `'${text.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
  const lines = [
    "# fish completion for worktree-ports: worktree-ports completions fish | source",
    "complete -c worktree-ports -f",
  ];
  for (const [name, spec] of Object.entries(commands)) {
    lines.push(
      `complete -c worktree-ports -n __fish_use_subcommand -a ${name} -d ${quote(spec.summary)}`,
    );
    for (const [option, { help, type, complete }] of Object.entries(spec.options)) {
      // Each value with an empty description of its own, so that fish does
      // not repeat the option's long one beside every value.
      const argument = complete === "files"
        ? " -r -F"
        : complete !== undefined
        ? ` -x -a ${quote(`(printf '%s\\t\\n' ${complete.join(" ")})`)}`
        : type === "string"
        ? " -x"
        : "";
      lines.push(
        `complete -c worktree-ports -n '__fish_seen_subcommand_from ${name}' -l ${option}${argument} -d ${
          quote(help)
        }`,
      );
    }
  }
  for (const [name, spec] of Object.entries(commands)) {
    if (spec.arguments === undefined) continue;
    lines.push(
      spec.arguments === "command"
        ? `complete -c worktree-ports -n '__fish_seen_subcommand_from ${name}' -a '(__fish_complete_subcommand --fcs-skip=2)'`
        : `complete -c worktree-ports -n '__fish_seen_subcommand_from ${name}' -a ${
          quote(spec.arguments.complete.join(" "))
        }`,
    );
  }
  return lines.join("\n") + "\n";
}

/** The options of a command that take a value, as `--name` words separated by spaces. */
function valueOptions(spec: Pick<CommandSpec, "options">): string {
  return Object.entries(spec.options).filter(([, option]) => option.type === "string")
    .map(([name]) => `--${name}`).join(" ");
}
