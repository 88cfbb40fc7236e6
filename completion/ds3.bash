# Bash completion for ds3 (source it, or install it as
# /usr/share/bash-completion/completions/ds3). Commands, each command's
# options, built-in config names for --config, folders for -m/-o, files
# elsewhere. tests/test_docs.sh checks that it names every option of every
# command's --help.

_ds3() {
    local cur prev cmd opts
    COMPREPLY=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    cmd=${COMP_WORDS[1]}

    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "mkmodel info run chat dump compare replay tokenize detokenize help --help --version" -- "$cur"))
        return 0
    fi

    case $prev in
        -m|--model|--tokenizer)
            COMPREPLY=($(compgen -d -- "$cur")); return 0 ;;
        --config)
            COMPREPLY=($(compgen -W "v3 r1 v3.1 v2 v2-lite kimi-k2 moonlight tiny tiny-v2 small tiny-text" -- "$cur"))
            COMPREPLY+=($(compgen -f -X '!*.json' -- "$cur")); return 0 ;;
        --dtype) COMPREPLY=($(compgen -W "f32 bf16 fp8" -- "$cur")); return 0 ;;
        --attn) COMPREPLY=($(compgen -W "absorb naive" -- "$cur")); return 0 ;;
        --kernels) COMPREPLY=($(compgen -W "fast deterministic ref" -- "$cur")); return 0 ;;
        --profile) COMPREPLY=($(compgen -W "fp32 bf16 fp8" -- "$cur")); return 0 ;;
        --routing) COMPREPLY=($(compgen -W "build own" -- "$cur")); return 0 ;;
        --emulate) COMPREPLY=($(compgen -W "bf16 fp8 fp8,ue8m0 bf16,hf fp8,hf" -- "$cur")); return 0 ;;
        -o|--output)
            if [ "$cmd" = mkmodel ]; then COMPREPLY=($(compgen -d -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
            return 0 ;;
        -f|--file) COMPREPLY=($(compgen -f -- "$cur")); return 0 ;;
        -p|--prompt|--system|--tokens|--stop|-n|--n-predict|-c|--ctx-size|--temp|--top-p|--top-k|--min-p|\
        --repeat-penalty|--repeat-last-n|-s|--seed|-t|--threads|--draft|--decode-from|--seed|--bias-shift|\
        --atol|--rtol|--names)
            return 0 ;;
    esac

    local sampling="--temp --top-p --top-k --min-p --repeat-penalty --repeat-last-n -s --seed -t --threads"
    case $cmd in
        mkmodel) opts="--config --dtype --seed --bias-shift --mtp-agree --tokenizer --force -o --output" ;;
        info) opts="-m --model --config --list" ;;
        run) opts="-m --model --tokens -p --prompt -f --file --chat --system --stop --tokenizer --ignore-eos
                   --quiet --json -n --n-predict -c --ctx-size --attn --mtp --draft --kernels $sampling" ;;
        chat) opts="-m --model --system -n --n-predict -c --ctx-size --tokenizer --verbose --quiet $sampling" ;;
        dump) opts="-m --model --tokens -o --output --attn --decode-from --emulate --kernels" ;;
        compare) opts="--profile --atol --rtol --names --all-rows --json" ;;
        replay) opts="-m --model --tokens --profile --atol --rtol --routing -o --output --json --kernels --emulate --attn" ;;
        tokenize) opts="--tokenizer -m --model --bos --special-as-text" ;;
        detokenize) opts="--tokenizer -m --model" ;;
        help) COMPREPLY=($(compgen -W "mkmodel info run chat dump compare replay tokenize detokenize" -- "$cur")); return 0 ;;
        *) return 0 ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
}
complete -F _ds3 ds3
