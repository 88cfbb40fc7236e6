/*
 * chat.h — `ds3 chat` (cli/chat.c): a multi-turn conversation in
 * DeepSeek-V3's chat format that keeps the KV cache between turns.
 */
#ifndef DS3_CLI_CHAT_H
#define DS3_CLI_CHAT_H

extern const char *const cli_help_chat;

/* argv[0] is the first argument after "chat"; returns the exit status. */
int cli_chat(int argc, char **argv);

#endif /* DS3_CLI_CHAT_H */
