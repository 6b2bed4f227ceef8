#!/usr/bin/env bash
# A Claude Code PreToolUse hook written in plain bash (no jq, no python), used unchanged:
# reads the hook input JSON from stdin, pulls out tool_input.command, and blocks "rm -rf" by
# exiting 2 with the reason on stderr. Anything else is allowed (exit 0, no output).
input=$(cat)

if [[ $input =~ \"tool_name\"[[:space:]]*:[[:space:]]*\"([^\"]*)\" ]]; then
  tool_name="${BASH_REMATCH[1]}"
else
  tool_name=""
fi
[[ $tool_name == "Bash" ]] || exit 0

if [[ $input =~ \"command\"[[:space:]]*:[[:space:]]*\"(([^\"\\]|\\.)*)\" ]]; then
  command="${BASH_REMATCH[1]}"
else
  exit 0
fi

if [[ $command =~ rm[[:space:]]+-[a-zA-Z]*r[a-zA-Z]*f|rm[[:space:]]+-[a-zA-Z]*f[a-zA-Z]*r ]]; then
  echo "Blocked: '$command' would delete files recursively; ask the user first." >&2
  exit 2
fi
exit 0
