/* The list of update rules: one #include and one X(NAME, name) line each.
 *
 * Included without FO_T (by update_rules.h: fields, argument structs,
 * prepare) and with FO_T set (by loops.inc, once per dtype, grad mode and
 * SIMD level: the loops).  FO_RULES(X) drives the enum, the argument union,
 * the prepare dispatch, the field tables and the kernel table rows.
 */
#include "rules/sgd.inc"
#include "rules/adagrad.inc"
#include "rules/rmsprop.inc"
#include "rules/adadelta.inc"
#include "rules/adam.inc"
#include "rules/adamax.inc"
#include "rules/radam.inc"
#include "rules/lion.inc"
#include "rules/rprop.inc"
/* The rules below are FO_FULL_WIDTH_RULES: left out of the 16-bit storage compilation
 * (FO_HALF_STORAGE, loops.inc).  A rule moved into FO_HALF_RULES has its #include moved above
 * this line. */
#if !(defined(FO_T) && FO_HALF_STORAGE)
#include "rules/nadam.inc"
#include "rules/asgd.inc"
#include "rules/lamb.inc"
#include "rules/adafactor.inc"
#endif

/* The rules whose loops also run on 16-bit storage (FO_LOAD/FO_STORE, loops.inc): a 16-bit
 * param of theirs whose states are all in its dtype, rounded to nearest even, takes these loops
 * (kernels.h, fo_run); every other 16-bit case goes through staged.inc's drivers.  Their
 * #includes stand above the FO_HALF_STORAGE guard. */
#ifndef FO_RULES
#define FO_HALF_RULES(X)   \
    X(SGD, sgd)            \
    X(ADAGRAD, adagrad)    \
    X(RMSPROP, rmsprop)    \
    X(ADADELTA, adadelta)  \
    X(ADAM, adam)          \
    X(ADAMAX, adamax)      \
    X(RADAM, radam)        \
    X(LION, lion)          \
    X(RPROP, rprop)
/* The rules whose loops index their operands directly (float32 and float64 only). */
#define FO_FULL_WIDTH_RULES(X) \
    X(NADAM, nadam)        \
    X(ASGD, asgd)          \
    X(LAMB, lamb)          \
    X(ADAFACTOR, adafactor)
/* Every rule, each listed once above; its place here is its number (enum fo_rule), which the
 * Python side reads from the compiled tables (runtime.rule_fields), never assumes. */
#define FO_RULES(X) FO_HALF_RULES(X) FO_FULL_WIDTH_RULES(X)
#endif

/* The rules with a per-tensor hook, fo_<name>_tensor (update_rules.h). */
#ifndef FO_TENSOR_RULES
#define FO_TENSOR_RULES(X) \
    X(NADAM, nadam)        \
    X(ASGD, asgd)          \
    X(ADAFACTOR, adafactor)
#endif

/* The rules with sweeps before their passes: X(NAME, name, sweeps), fo_<name>_sweep_items and
 * fo_<name>_scratch (update_rules.h). */
#ifndef FO_SWEEP_RULES
#define FO_SWEEP_RULES(X) \
    X(ADAFACTOR, adafactor, 3)
#endif

/* The rules that pass over each tensor more than once: X(NAME, name, passes, sums) (update_rules.h). */
#ifndef FO_PASS_RULES
#define FO_PASS_RULES(X) \
    X(LAMB, lamb, 2, 2)    \
    X(ADAFACTOR, adafactor, 2, 2)
#endif
