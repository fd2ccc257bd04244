// Must NOT compile: d4c_cdimg (ops) uses d4c_format through its public header
// d4c/cdimg.h only; format's private index codec is not on its include path.
// test/CMakeLists.txt runs this as a test that passes only when the include
// is not found.
#include "index_codec.h"
