// Reads the original destination of a connection redirected by netfilter (iptables REDIRECT/DNAT):
// getsockopt(SOL_IP, SO_ORIGINAL_DST) for IPv4, getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) for IPv6.
// Node exposes no getsockopt, so this small N-API addon does. N-API keeps it ABI-stable across Node versions.
#include <node_api.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, err == ENOENT ? "ENOENT" : "ESYSCALL", msg);
  return NULL;
}

// originalDst(fd: number, family: 4 | 6): { address: string, port: number }
// Throws with code ENOENT when the connection was not redirected (no conntrack NAT entry).
static napi_value original_dst(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, NULL, "originalDst(fd, family) needs two arguments");
    return NULL;
  }
  int32_t fd, family;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &family) != napi_ok) {
    napi_throw_type_error(env, NULL, "originalDst(fd, family): both arguments must be integers");
    return NULL;
  }

  char text[INET6_ADDRSTRLEN];
  int port;
  if (family == 6) {
    struct sockaddr_in6 sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &sa, &len) != 0) return throw_errno(env, "getsockopt(IP6T_SO_ORIGINAL_DST)", errno);
    inet_ntop(AF_INET6, &sa.sin6_addr, text, sizeof text);
    port = ntohs(sa.sin6_port);
  } else {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sa, &len) != 0) return throw_errno(env, "getsockopt(SO_ORIGINAL_DST)", errno);
    inet_ntop(AF_INET, &sa.sin_addr, text, sizeof text);
    port = ntohs(sa.sin_port);
  }

  napi_value result, address, port_value;
  napi_create_object(env, &result);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &address);
  napi_create_int32(env, port, &port_value);
  napi_set_named_property(env, result, "address", address);
  napi_set_named_property(env, result, "port", port_value);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "originalDst", NAPI_AUTO_LENGTH, original_dst, NULL, &fn);
  napi_set_named_property(env, exports, "originalDst", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
