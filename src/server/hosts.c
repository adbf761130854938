/* hosts: which Host headers the server answers. */
#include "hosts.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HOST_MAX 253                 /* longest DNS name */

struct hosts {
        bool any;                    /* every Host */
        bool literals;               /* IP address literals too */
        int n;
        char *names[HOSTS_MAX_NAMES]; /* lower case, no trailing dot; ".x" = x and names under it; owned */
        char what[160];              /* hosts_describe */
};

struct hosts *hosts_free(struct hosts *h)
{
        if (!h)
                return NULL;
        for (int i = 0; i < h->n; i++)
                free(h->names[i]);
        free(h);
        return NULL;
}

/* Whether name (len bytes) is one a host may have: letters, digits, '-',
 * '_' and dots; a leading dot for a domain. */
static bool name_ok(const char *name, size_t len)
{
        if (len == 0 || len > HOST_MAX)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!isalnum((unsigned char)name[i]) && !strchr("-_.", name[i]))
                        return false;
        return !(len == 1 && name[0] == '.');
}

static int add_name(struct hosts *h, const char *p, size_t len, char *err, size_t err_len)
{
        if (len == 1 && p[0] == '*') {
                h->any = true;
                return 0;
        }
        if (!name_ok(p, len))
                return err_set(err, err_len, -EINVAL, "allowed-hosts: '%.*s' is not a host name (no port, no "
                               "scheme; '*' for any)", (int)(len < 80 ? len : 80), p);
        if (h->n == HOSTS_MAX_NAMES)
                return err_set(err, err_len, -EINVAL, "allowed-hosts: more than %d names", HOSTS_MAX_NAMES);
        if (len > 1 && p[len - 1] == '.')
                len--;
        char *s = strndup(p, len);
        if (!s)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        for (char *c = s; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        h->names[h->n++] = s;
        return 0;
}

int hosts_new(const char *list, bool loopback_only, char *err, size_t err_len, struct hosts **ret_hosts)
{
        struct hosts *h = calloc(1, sizeof *h);
        int r;

        if (!h)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        for (const char *p = list ? list : ""; *p;) {
                size_t len = strcspn(p, ", \t\n");
                if (len && (r = add_name(h, p, len, err, err_len)) < 0) {
                        hosts_free(h);
                        return r;
                }
                p += len;
                p += strspn(p, ", \t\n");
        }
        bool set = h->any || h->n > 0;
        if (!set && !loopback_only)
                h->any = true;
        h->literals = set;
        if (h->any)
                snprintf(h->what, sizeof h->what, "any");
        else if (!set)
                snprintf(h->what, sizeof h->what, "loopback names and addresses only (localhost, 127.0.0.1, [::1])");
        else
                snprintf(h->what, sizeof h->what, "the %d name(s) of allowed-hosts, loopback names and IP "
                         "addresses", h->n);
        *ret_hosts = h;
        return 0;
}

const char *hosts_describe(const struct hosts *h)
{
        return h->what;
}

/* name (lower case, no trailing dot) is localhost or under it (RFC 6761:
 * resolvers and browsers answer those with loopback addresses themselves). */
static bool loopback_name(const char *name)
{
        size_t n = strlen(name);
        return strcmp(name, "localhost") == 0 || (n > 10 && strcmp(name + n - 10, ".localhost") == 0);
}

/* An IPv4 literal in 127.0.0.0/8, or [::1] (ip6: the text inside the
 * brackets); *ret_literal: whether it is an address literal at all. */
static bool loopback_address(const char *name, bool ip6, bool *ret_literal)
{
        struct in6_addr a6;
        struct in_addr a4;

        *ret_literal = false;
        if (ip6) {
                if (inet_pton(AF_INET6, name, &a6) != 1)
                        return false;
                *ret_literal = true;
                return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
        }
        if (inet_pton(AF_INET, name, &a4) != 1)
                return false;
        *ret_literal = true;
        return (ntohl(a4.s_addr) >> 24) == 127;
}

/* The host of a Host value (lower case, without port and trailing dot, and
 * for IPv6 without brackets) into buf; false when it is malformed. */
static bool host_part(const char *value, char *buf, size_t len, bool *ret_ip6)
{
        const char *end;

        *ret_ip6 = value[0] == '[';
        if (*ret_ip6) {
                value++;
                end = strchr(value, ']');
                if (!end)
                        return false;
                if (end[1] && end[1] != ':')
                        return false;
        } else {
                end = strchr(value, ':');
                if (!end)
                        end = value + strlen(value);
                else if (strchr(end + 1, ':'))
                        return false;
        }
        const char *port = *end == ']' ? end + 1 : end;
        if (*port == ':' && strspn(port + 1, "0123456789") != strlen(port + 1))
                return false;
        size_t n = (size_t)(end - value);
        if (n > 1 && value[n - 1] == '.' && !*ret_ip6)
                n--;
        if (n == 0 || n >= len)
                return false;
        for (size_t i = 0; i < n; i++)
                buf[i] = (char)tolower((unsigned char)value[i]);
        buf[n] = '\0';
        return true;
}

bool hosts_allow(const struct hosts *h, const char *value)
{
        char name[HOST_MAX + 2];
        bool ip6, literal;

        if (h->any || !value)
                return true;
        if (!host_part(value, name, sizeof name, &ip6))
                return false;
        if (loopback_address(name, ip6, &literal))
                return true;
        if (literal || ip6)
                return literal && h->literals;
        if (loopback_name(name))
                return true;
        size_t n = strlen(name);
        for (int i = 0; i < h->n; i++) {
                const char *a = h->names[i];
                size_t an = strlen(a);
                if (strcmp(name, a) == 0)
                        return true;
                /* ".example.com": example.com and every name under it. */
                if (a[0] == '.' && (strcmp(name, a + 1) == 0 || (n > an && strcmp(name + n - an, a) == 0)))
                        return true;
        }
        return false;
}
