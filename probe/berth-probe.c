/*
 * berth-probe: Berth's health probe inside a Swarm task.
 *
 *     berth-probe PORT PATH [HOLD_MS]
 *
 * GETs http://127.0.0.1:PORT/PATH and exits 0 when the status is 2xx or
 * 3xx, 1 for any other status, 2-7 when it could not ask (usage, socket,
 * connect, request too long, write, read). With HOLD_MS, it exits 8
 * without asking while the container (its process 1) is younger than
 * HOLD_MS milliseconds: a task of an exposed service is not healthy to
 * Swarm before Berth has had time to route requests to it, so Swarm
 * stops no old task that still takes traffic (see src/engine/swarm.rs). Docker's HEALTHCHECK timeout
 * bounds it. No libc: raw x86-64 Linux system calls, so one static binary
 * of a few KB runs in any linux/amd64 image, scratch included. Mounted
 * into tasks from a Swarm config (see src/docker/swarm.rs).
 */
typedef unsigned long size;

static long syscall3(long n, long a, long b, long c)
{
	long r;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "a"(n), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return r;
}

#define SYS_READ 0
#define SYS_WRITE 1
#define SYS_OPEN 2
#define SYS_CLOSE 3
#define SYS_SOCKET 41
#define SYS_CONNECT 42
#define SYS_EXIT 60

static void leave(int code)
{
	syscall3(SYS_EXIT, code, 0, 0);
	for (;;) {
	}
}

struct sockaddr_in4 {
	unsigned short family;
	unsigned short port;
	unsigned int addr;
	char zero[8];
};

static size length(const char *s)
{
	size n = 0;
	while (s[n])
		n++;
	return n;
}

/* The decimal number at *p (digits only; stops at anything else). */
static unsigned long number(const char **p)
{
	unsigned long n = 0;
	while (**p >= '0' && **p <= '9') {
		n = n * 10 + (unsigned long)(**p - '0');
		(*p)++;
	}
	return n;
}

/* The first bytes of a file, NUL-terminated; 0 when it cannot be read. */
static size slurp(const char *path, char *buf, size cap)
{
	long fd = syscall3(SYS_OPEN, (long)path, 0 /* O_RDONLY */, 0);
	if (fd < 0)
		return 0;
	size got = 0;
	while (got + 1 < cap) {
		long r = syscall3(SYS_READ, fd, (long)buf + (long)got, (long)(cap - 1 - got));
		if (r <= 0)
			break;
		got += (size)r;
	}
	syscall3(SYS_CLOSE, fd, 0, 0);
	buf[got] = 0;
	return got;
}

/*
 * How long ago the container's process 1 started, in milliseconds:
 * /proc/uptime (seconds since boot) less field 22 of /proc/1/stat (its
 * start, in clock ticks since boot; 100 per second on Linux). -1 when
 * /proc cannot tell.
 */
static long container_age_ms(void)
{
	char buf[1024];
	if (!slurp("/proc/uptime", buf, sizeof buf))
		return -1;
	const char *p = buf;
	unsigned long up = number(&p) * 1000;
	if (*p == '.') {
		p++;
		unsigned long scale = 100;
		while (*p >= '0' && *p <= '9') {
			up += (unsigned long)(*p - '0') * scale;
			scale /= 10;
			p++;
		}
	}
	if (!slurp("/proc/1/stat", buf, sizeof buf))
		return -1;
	/* The command name (field 2) may hold spaces: count after its ')'. */
	const char *end = 0;
	for (const char *q = buf; *q; q++)
		if (*q == ')')
			end = q;
	if (!end)
		return -1;
	p = end + 1;
	/* Past fields 3 (state) to 21, to field 22. */
	for (int field = 3; field < 22; field++) {
		while (*p == ' ')
			p++;
		while (*p && *p != ' ')
			p++;
		if (!*p)
			return -1;
	}
	while (*p == ' ')
		p++;
	unsigned long started = number(&p) * 10;
	return up >= started ? (long)(up - started) : 0;
}

void probe_main(long *stack)
{
	int argc = (int)stack[0];
	char **argv = (char **)(stack + 1);
	if (argc < 3)
		leave(2);
	unsigned port = 0;
	for (char *p = argv[1]; *p; p++) {
		if (*p < '0' || *p > '9' || port > 65535)
			leave(2);
		port = port * 10 + (unsigned)(*p - '0');
	}
	if (port == 0 || port > 65535)
		leave(2);
	if (argc > 3) {
		const char *h = argv[3];
		unsigned long hold = number(&h);
		if (*h)
			leave(2);
		long age = container_age_ms();
		if (age >= 0 && (unsigned long)age < hold)
			leave(8);
	}
	int fd = (int)syscall3(SYS_SOCKET, 2 /* AF_INET */, 1 /* SOCK_STREAM */, 0);
	if (fd < 0)
		leave(3);
	struct sockaddr_in4 to = { 2, (unsigned short)((port >> 8) | ((port & 255) << 8)),
				   0x0100007f /* 127.0.0.1 */, { 0 } };
	if (syscall3(SYS_CONNECT, fd, (long)&to, sizeof to) < 0)
		leave(4);
	char request[1024];
	size n = 0;
	const char *parts[] = { "GET ", argv[2],
				" HTTP/1.0\r\nHost: localhost\r\nUser-Agent: berth-probe\r\n\r\n" };
	for (int i = 0; i < 3; i++) {
		size l = length(parts[i]);
		if (n + l >= sizeof request)
			leave(5);
		for (size j = 0; j < l; j++)
			request[n++] = parts[i][j];
	}
	for (size sent = 0; sent < n;) {
		long w = syscall3(SYS_WRITE, fd, (long)request + (long)sent, (long)(n - sent));
		if (w <= 0)
			leave(6);
		sent += (size)w;
	}
	/* "HTTP/1.x NNN": the status's first digit is byte 9. */
	char status[12];
	size got = 0;
	while (got < sizeof status) {
		long r = syscall3(SYS_READ, fd, (long)status + (long)got, (long)(sizeof status - got));
		if (r <= 0)
			leave(7);
		got += (size)r;
	}
	leave(status[9] == '2' || status[9] == '3' ? 0 : 1);
}

__asm__(".global _start\n"
	"_start:\n"
	"  mov %rsp, %rdi\n"
	"  and $-16, %rsp\n"
	"  call probe_main\n");
