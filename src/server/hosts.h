/* hosts: which Host headers the server answers, so that a DNS-rebinding
 * page in a local browser cannot read a loopback daemon's answers or spend
 * its compute. Such a page is always reached under the attacker's own name
 * (rebind.example), which its browser sends as Host; loopback names and IP
 * address literals never come from a rebinding.
 *
 * The policy of one listener (the allowed-hosts setting and its address):
 *   - unset, on a loopback address: loopback names and addresses only
 *     (localhost, *.localhost, 127.0.0.0/8, [::1]);
 *   - unset, on any other address: any Host (the listener is reachable
 *     from the network under names the daemon cannot know);
 *   - "*" among the names: any Host;
 *   - a list: loopback names, IP address literals (Kubernetes probes send
 *     the pod's address), and the names listed ("api.example.com", or
 *     ".example.com" for it and every name under it).
 * A port in the Host is ignored, as is a trailing dot. A request without
 * Host (HTTP/1.0; HTTP/1.1 requires one) is answered: browsers always send it.
 *
 *   struct hosts *h;
 *   if (hosts_new("api.example.com, .internal", false, err, sizeof err, &h) < 0) ...
 *   if (!hosts_allow(h, host_header)) answer 421;
 *   h = hosts_free(h);
 */
#ifndef EFFNET_SERVER_HOSTS_H
#define EFFNET_SERVER_HOSTS_H

#include <stdbool.h>
#include <stddef.h>

#define HOSTS_MAX_NAMES 64           /* names in the allowed-hosts setting */

struct hosts;

/* The policy of the allowed-hosts setting list (names separated by commas
 * or white space; NULL or empty: unset), for a listener on a loopback
 * address (loopback_only) or not. -EINVAL (err names the
 * entry: one with a port, a character no host name has, too many names),
 * -ENOMEM. */
int hosts_new(const char *list, bool loopback_only, char *err, size_t err_len, struct hosts **ret_hosts);

struct hosts *hosts_free(struct hosts *h);

/* Whether a request with this Host header value (NULL: none) is answered.
 * Thread-safe (h is immutable). */
bool hosts_allow(const struct hosts *h, const char *host);

/* What h accepts, in words for the log and for the error message of a
 * refused request ("loopback names and addresses only"). */
const char *hosts_describe(const struct hosts *h);

#endif
