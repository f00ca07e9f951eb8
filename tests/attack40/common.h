// Attack round 40 uses round 39's helpers (tests/attack39/common.h).
#pragma once

#include "tests/attack39/common.h"

namespace attack40 = attack39;
