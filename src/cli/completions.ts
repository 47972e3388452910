// Shell completion scripts for bash, zsh and fish, generated from the command
// table they are given.

import { UsageError } from "./args.ts";
import type { Commands, Completion } from "./spec.ts";

/** The completion script for `shell`, from the table. */
export function completionScript(shell: string | undefined, commands: Commands): string {
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
function completingOptions(commands: Commands): Map<string, Completion> {
  const options = new Map<string, Completion>();
  for (const spec of Object.values(commands)) {
    for (const [name, option] of Object.entries(spec.options)) {
      if (option.complete !== undefined) options.set(name, option.complete);
    }
  }
  return options;
}

function bashCompletion(commands: Commands): string {
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
    spec.arguments === undefined
      ? []
      : spec.arguments === "command"
      ? [`[[ \${COMP_WORDS[1]} == ${name} && $cur != -* ]]; then
    COMPREPLY=($(compgen -c -- "$cur"))
    return`]
      : [`[[ \${COMP_WORDS[1]} == ${name} && $COMP_CWORD -eq 2 ]]; then
    words="${spec.arguments.complete.join(" ")}"`]
  );
  const positional = positionals.length === 0
    ? ""
    : `  if ${positionals.join("\n  elif ")}\n  fi\n`;
  return `# bash completion for worktree-ports: eval "$(worktree-ports completions bash)"
_worktree_ports() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} words
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

function zshCompletion(commands: Commands): string {
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
    const extra = spec.arguments === undefined
      ? ""
      : spec.arguments === "command"
      ? ` ${quote("*::command:_normal")}`
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

function fishCompletion(commands: Commands): string {
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
      const argument = complete === "files"
        ? " -r -F"
        : complete !== undefined
        ? ` -x -a ${quote(complete.join(" "))}`
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
