/* std::ios_base_library_init() was added in GCC 13 (GLIBCXX_3.4.32); in older libstdc++
   the iostream init is done by ios_base::Init objects in each TU, so a no-op suffices. */
void ios_base_library_init_shim(void) {}
__asm__(".symver ios_base_library_init_shim,_ZSt21ios_base_library_initv@@GLIBCXX_3.4.32");
