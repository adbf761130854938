/* Unit test of the access log's journal path (src/daemon/log.c): which of
 * the stream line and the journal fields a record becomes, decided by
 * JOURNAL_STREAM and what stderr is, with a fake journal in place of
 * sd_journal_sendv (journald is not needed). */
#include "check.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static char fields[4096];   /* the fake journal's last record, one field per line */
static int records;
static int fake_result;

static int fake_sendv(const struct iovec *iov, int n)
{
        size_t used = 0;

        records++;
        fields[0] = '\0';
        for (int i = 0; i < n; i++)
                used += (size_t)snprintf(fields + used, sizeof fields - used, "%.*s\n", (int)iov[i].iov_len,
                                         (const char *)iov[i].iov_base);
        return fake_result;
}

static const struct http_access record = {
        .request_id = "abc-123", .client = "192.0.2.7", .method = "POST", .path = "/v1/classify\n<3>forged",
        .status = 503, .error = "queue_full", .images = 2, .body_bytes = 1234, .answer_bytes = 56,
        .queue_ms = -1, .inference_ms = 0, .batch_size = 0, .ms = 1.5,
        .trace_id = "4bf92f3577b34da6a3ce929d0e0e4736", .span_id = "00f067aa0ba902b7", .parent_id = "b7ad6b7169203331",
};

/* Points stderr at fd with JOURNAL_STREAM naming target's device and inode
 * (or unset), logs the record once and returns what reached stderr. */
static bool log_json;

static void log_once(int fd, int target, bool set_env, char *out, size_t out_len, int read_fd)
{
        struct stat st;
        char env[64];
        int saved = dup(STDERR_FILENO);

        REQUIRE(saved >= 0 && fstat(target, &st) == 0);
        snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
        if (set_env)
                setenv("JOURNAL_STREAM", env, 1);
        else
                unsetenv("JOURNAL_STREAM");
        dup2(fd, STDERR_FILENO);
        log_setup("effnetd", log_json);
        log_access(&record);
        dup2(saved, STDERR_FILENO);
        close(saved);
        ssize_t n = read(read_fd, out, out_len - 1);
        out[n > 0 ? n : 0] = '\0';
}

int main(void)
{
        int sv[2];
        char line[4096];

        log_set_journal_sender(fake_sendv);
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        REQUIRE(fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0);

        /* stderr is journald's socket: fields, and no line. */
        log_once(sv[0], sv[0], true, line, sizeof line, sv[1]);
        CHECK_EQ(records, 1);
        CHECK_MSG(line[0] == '\0', "a line on the stream too: %s", line);
        CHECK_CONTAINS(fields, "\nSTATUS=503\n");
        CHECK_CONTAINS(fields, "\nREQUEST_ID=abc-123\n");
        CHECK_CONTAINS(fields, "\nCLIENT=192.0.2.7\n");
        CHECK_CONTAINS(fields, "\nMETHOD=POST\n");
        CHECK_CONTAINS(fields, "\nERROR=queue_full\n");
        CHECK_CONTAINS(fields, "\nBYTES_IN=1234\n");
        CHECK_CONTAINS(fields, "\nIMAGES=2\n");
        CHECK_CONTAINS(fields, "\nQUEUE_MS=0.0\n");
        CHECK_CONTAINS(fields, "\nDURATION_MS=1.5\n");
        CHECK_CONTAINS(fields, "\nPRIORITY=6\n");
        CHECK_CONTAINS(fields, "\nSYSLOG_IDENTIFIER=effnetd\n");
        CHECK_CONTAINS(fields, "\nTRACE_ID=4bf92f3577b34da6a3ce929d0e0e4736\n");
        CHECK_CONTAINS(fields, "\nSPAN_ID=00f067aa0ba902b7\n");
        CHECK_CONTAINS(fields, "\nPARENT_SPAN_ID=b7ad6b7169203331\n");
        CHECK_CONTAINS(fields, "MESSAGE=access id=abc-123 client=192.0.2.7 \"POST /v1/classify\\x0a<3>forged\" 503");
        /* The client's bytes are escaped in every field: no field is forged. */
        CHECK_CONTAINS(fields, "\nPATH=/v1/classify\\x0a<3>forged\n");
        CHECK(strstr(fields, "\n<3>") == NULL);

        /* No JOURNAL_STREAM, or one naming another file: the text line. */
        log_once(sv[0], sv[0], false, line, sizeof line, sv[1]);
        CHECK_EQ(records, 1);
        CHECK_CONTAINS(line, "effnetd: access id=abc-123 client=192.0.2.7");
        CHECK_CONTAINS(line, " trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7");
        /* JSON lines carry the trace context as fields. */
        log_json = true;
        log_once(sv[0], sv[0], false, line, sizeof line, sv[1]);
        log_json = false;
        CHECK_CONTAINS(line, "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"");
        CHECK_CONTAINS(line, "\"span_id\":\"00f067aa0ba902b7\"");
        CHECK_CONTAINS(line, "\"parent_span_id\":\"b7ad6b7169203331\"");
        log_once(sv[0], sv[1], true, line, sizeof line, sv[1]);
        CHECK_EQ(records, 1);
        CHECK_CONTAINS(line, "effnetd: access id=abc-123");

        /* A regular file that JOURNAL_STREAM names (a wrapper that lies, or a
         * test) is no journal: prefixed lines, no fields. */
        char path[] = "/tmp/effnet-test-log-XXXXXX";
        int file = mkstemp(path);
        REQUIRE(file >= 0);
        int reader = open(path, O_RDONLY);
        REQUIRE(reader >= 0);
        log_once(file, file, true, line, sizeof line, reader);
        CHECK_EQ(records, 1);
        CHECK(strncmp(line, "<6>access id=abc-123", 20) == 0);

        /* The journal refuses a record: the line instead, and from then on
         * lines only (no system call that fails each time). */
        fake_result = -ECONNREFUSED;
        log_once(sv[0], sv[0], true, line, sizeof line, sv[1]);
        CHECK_EQ(records, 2);
        CHECK(strncmp(line, "<6>access id=abc-123", 20) == 0);
        int saved = dup(STDERR_FILENO);
        dup2(sv[0], STDERR_FILENO);
        log_access(&record);
        dup2(saved, STDERR_FILENO);
        close(saved);
        ssize_t n = read(sv[1], line, sizeof line - 1);
        line[n > 0 ? n : 0] = '\0';
        CHECK_EQ(records, 2);
        CHECK(strncmp(line, "<6>access id=abc-123", 20) == 0);

        unlink(path);
        close(file);
        close(reader);
        close(sv[0]);
        close(sv[1]);
        return CHECK_DONE();
}
