/* deliver.c — ringmail from C: start an engine from TOML, submit one batch,
 * print every event, drain, stop.
 *
 *   deliver HOST:PORT
 *
 * Every recipient's mail goes to the SMTP server at HOST:PORT (a test sink,
 * say). Exits 0 when the three valid recipients were delivered and the
 * invalid one was refused in the acknowledgement.
 *
 * Build against an installed ringmail:
 *   cc -std=c11 deliver.c $(pkg-config --cflags --libs ringmail) -o deliver
 */
#include <ringmail/ringmail_c.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* Counters the callback updates from the shard threads, concurrently. */
struct tally {
  atomic_uint delivered;
  atomic_uint other;
};

static void on_event(const ringmail_event* e, void* user_data) {
  struct tally* t = user_data;
  if (e->type == RINGMAIL_EVENT_DELIVERED) {
    atomic_fetch_add(&t->delivered, 1);
  } else {
    atomic_fetch_add(&t->other, 1);
  }
  /* One printf per line: stdio locks the stream, lines do not mix. */
  printf("event %.*s\n", (int)e->json.len, e->json.ptr);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s HOST:PORT\n", argv[0]);
    return 2;
  }
  printf("ringmail %s (headers %s)\n", ringmail_version(), RINGMAIL_VERSION_STRING);

  /* No socket, no event file, no spool: everything goes through this API. */
  char toml[512];
  snprintf(toml, sizeof toml,
           "[ingest]\nsocket = \"\"\n"
           "[events]\nfile = \"\"\n"
           "[spool]\nmode = \"off\"\n"
           "[engine]\nshards = 2\n"
           "[routing]\ndefault = \"%s\"\n",
           argv[1]);
  char* error = NULL;
  ringmail_engine* engine = ringmail_start(toml, &error);
  if (engine == NULL) {
    fprintf(stderr, "cannot start: %s\n", error != NULL ? error : "?");
    ringmail_free_string(error);
    return 1;
  }

  struct tally tally;
  atomic_init(&tally.delivered, 0);
  atomic_init(&tally.other, 0);
  if (ringmail_subscribe(engine, on_event, &tally) == 0) {
    fprintf(stderr, "cannot subscribe\n");
    ringmail_stop(engine, 0);
    return 1;
  }

  static const char message[] =
      "From: <news@example.com>\r\n"
      "To: <undisclosed-recipients:;>\r\n"
      "Subject: hello from C\r\n"
      "\r\n"
      "Sent through libringmail.\r\n";
  const char* recipients[] = {"alice@example.org", "bob@example.net", "not an address",
                              "carol@example.com"};
  ringmail_batch batch = RINGMAIL_BATCH_INIT;
  batch.batch_id = "c-example";
  batch.sender = "news@example.com";
  batch.message = message;
  batch.message_len = strlen(message);
  batch.recipients = recipients;
  batch.recipient_count = sizeof recipients / sizeof recipients[0];

  ringmail_ack* ack = ringmail_submit(engine, &batch);
  if (ack == NULL) {
    fprintf(stderr, "submit failed\n");
    ringmail_stop(engine, 0);
    return 1;
  }
  printf("ack %s: status %d, accepted %u\n", ack->batch_id, (int)ack->status,
         (unsigned)ack->accepted);
  for (size_t i = 0; i < ack->rejection_count; ++i) {
    printf("rejected recipient %u: %s\n", (unsigned)ack->rejections[i].index,
           ack->rejections[i].text);
  }
  const int ack_ok = ack->status == RINGMAIL_ACK_ACCEPTED && ack->accepted == 3 &&
                     ack->rejection_count == 1 && ack->rejections[0].index == 2;
  ringmail_ack_free(ack);

  const int drained = ringmail_drain(engine, 30000) == RINGMAIL_OK;
  ringmail_engine_stats stats = RINGMAIL_ENGINE_STATS_INIT;
  if (ringmail_stats(engine, &stats) == RINGMAIL_OK) {
    printf("stats: delivered %llu, bounced %llu, unfinished %llu\n",
           (unsigned long long)stats.delivered, (unsigned long long)stats.bounced,
           (unsigned long long)stats.unfinished);
  }
  /* After ringmail_stop no callback runs: the tally is final. */
  ringmail_stop(engine, 0);

  unsigned delivered = atomic_load(&tally.delivered);
  unsigned other = atomic_load(&tally.other);
  printf("delivered %u, other events %u\n", delivered, other);
  return ack_ok && drained && delivered == 3 && other == 0 ? 0 : 1;
}
