// Must NOT compile: d4c_chain uses the codecs through d4c/codec.h only; the
// bsdiff internals of d4c_codec are private to it. test/CMakeLists.txt runs
// this as a test that passes only when the include is not found.
#include "bsdiff_diff.h"
