// operators.cc - C++'s operators new and delete under the preload, for
// tests/test_preload.py: every form the preload defines (plain, array,
// nothrow, aligned, sized delete), the new-handler and std::bad_alloc on a
// request no allocator can serve. Prints what it saw; the same lines under
// glibc's malloc and under the preload.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <vector>

struct alignas(64) Line {
	char bytes[64];
};
struct alignas(16384) Page {
	char bytes[100];
};

static int handler_calls;
static void handler()
{
	handler_calls++;
	std::set_new_handler(nullptr); // the next failure throws
}

int main()
{
	std::vector<int *> ints;
	for (int i = 0; i < 10000; i++)
		ints.push_back(new int(i));
	long sum = 0;
	for (int *p : ints) {
		sum += *p;
		delete p; // sized delete (-fsized-deallocation, the default since C++14)
	}
	std::printf("new and delete: %ld\n", sum);

	char *a = new char[1000];
	std::memset(a, 1, 1000);
	delete[] a;
	int *n = new (std::nothrow) int[50];
	std::printf("nothrow new: %s\n", n ? "ok" : "null");
	delete[] n;

	bool aligned = true;
	for (int i = 0; i < 1000; i++) {
		Line *l = new Line;
		Page *g = new Page;
		Line *ls = new Line[3];
		aligned &= reinterpret_cast<std::uintptr_t>(l) % 64 == 0 &&
			   reinterpret_cast<std::uintptr_t>(g) % 16384 == 0 &&
			   reinterpret_cast<std::uintptr_t>(ls) % 64 == 0;
		std::memset(g->bytes, 2, sizeof g->bytes);
		delete l;
		delete g;
		delete[] ls;
	}
	Page *gn = new (std::nothrow) Page;
	aligned &= gn && reinterpret_cast<std::uintptr_t>(gn) % 16384 == 0;
	delete gn;
	std::printf("aligned new: %s\n", aligned ? "ok" : "misaligned");

	const std::size_t huge = std::size_t(1) << 62;
	int *none = new (std::nothrow) int[huge / sizeof(int)];
	std::printf("nothrow new of 4 EiB: %s\n", none ? "served" : "null");
	std::set_new_handler(handler);
	try {
		char *c = new char[huge];
		std::printf("new of 4 EiB: served %p\n", static_cast<void *>(c));
	} catch (const std::bad_alloc &) {
		std::printf("new of 4 EiB: std::bad_alloc after %d new-handler call(s)\n", handler_calls);
	}
	try {
		Page *p = new Page[huge / sizeof(Page)];
		std::printf("aligned new of 4 EiB: served %p\n", static_cast<void *>(p));
	} catch (const std::bad_alloc &) {
		std::printf("aligned new of 4 EiB: std::bad_alloc\n");
	}
	return 0;
}
