/* The update rules of fastoptim, part 1 of 2: per-call arguments and the
 * scalars derived from them once per call, in double.
 *
 * Part 2, update_loops.inc, holds the per-element math, generic over the
 * array dtype.  Between them, each optimizer's math is written exactly once;
 * the operation order mirrors torch.optim's single-tensor implementation so
 * that results agree with it to rounding, and agree bit for bit with
 * fastoptim.reference (NumPy, same operation order).
 *
 * Operand slots passed to a loop: data[0] = param, data[1] = grad, data[2..]
 * = the rule's state arrays in the order listed beside each struct (NULL where
 * the options do not need that array).
 */
#ifndef FASTOPTIM_UPDATE_RULES_H
#define FASTOPTIM_UPDATE_RULES_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t fo_index;

enum fo_rule { FO_SGD, FO_ADAGRAD, FO_RMSPROP, FO_ADADELTA, FO_ADAM, FO_N_RULES };
enum fo_dtype { FO_FLOAT32, FO_FLOAT64, FO_N_DTYPES };
#define FO_MAX_OPERANDS 5

/* state: momentum_buffer (only when momentum != 0) */
typedef struct {
    double lr, momentum, dampening, weight_decay;
    int64_t step;                 /* 1-based; at step 1 the buffer is set to the gradient */
    int nesterov, maximize;
    double one_minus_dampening;   /* derived */
} fo_sgd_args;

/* state: sum */
typedef struct {
    double lr, lr_decay, weight_decay, eps;
    int64_t step;
    int maximize;
    double clr;                   /* derived: lr / (1 + (step - 1) * lr_decay) */
} fo_adagrad_args;

/* state: square_avg, momentum_buffer (momentum > 0), grad_avg (centered) */
typedef struct {
    double lr, alpha, eps, weight_decay, momentum;
    int64_t step;
    int centered, maximize;
    double one_minus_alpha;       /* derived */
} fo_rmsprop_args;

/* state: square_avg, acc_delta */
typedef struct {
    double lr, rho, eps, weight_decay;
    int64_t step;
    int maximize;
    double one_minus_rho;         /* derived */
} fo_adadelta_args;

/* state: exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad).  AdamW is Adam with
 * decoupled_weight_decay set, exactly as torch.optim.AdamW is. */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step;
    int amsgrad, maximize, decoupled_weight_decay;
    /* derived */
    double one_minus_beta1, one_minus_beta2, step_size, bias_correction2_sqrt;
    double l2_weight_decay;       /* weight_decay folded into the gradient (Adam) */
    double decay_factor;          /* 1 - lr * weight_decay (AdamW), else 1: p * 1 is exact */
} fo_adam_args;

typedef union {
    fo_sgd_args sgd;
    fo_adagrad_args adagrad;
    fo_rmsprop_args rmsprop;
    fo_adadelta_args adadelta;
    fo_adam_args adam;
} fo_args;

static inline void fo_sgd_prepare(fo_sgd_args *a)
{
    a->one_minus_dampening = 1.0 - a->dampening;
}

static inline void fo_adagrad_prepare(fo_adagrad_args *a)
{
    a->clr = a->lr / (1.0 + (double)(a->step - 1) * a->lr_decay);
}

static inline void fo_rmsprop_prepare(fo_rmsprop_args *a)
{
    a->one_minus_alpha = 1.0 - a->alpha;
}

static inline void fo_adadelta_prepare(fo_adadelta_args *a)
{
    a->one_minus_rho = 1.0 - a->rho;
}

static inline void fo_adam_prepare(fo_adam_args *a)
{
    const double step = (double)a->step;
    const double bias_correction1 = 1.0 - pow(a->beta1, step);
    const double bias_correction2 = 1.0 - pow(a->beta2, step);
    a->one_minus_beta1 = 1.0 - a->beta1;
    a->one_minus_beta2 = 1.0 - a->beta2;
    a->step_size = a->lr / bias_correction1;
    a->bias_correction2_sqrt = pow(bias_correction2, 0.5);  /* torch: bias_correction2 ** 0.5 */
    if (a->decoupled_weight_decay) {
        a->l2_weight_decay = 0.0;
        a->decay_factor = 1.0 - a->lr * a->weight_decay;
    } else {
        a->l2_weight_decay = a->weight_decay;
        a->decay_factor = 1.0;
    }
}

static inline void fo_prepare(int rule, fo_args *a)
{
    switch (rule) {
    case FO_SGD: fo_sgd_prepare(&a->sgd); break;
    case FO_ADAGRAD: fo_adagrad_prepare(&a->adagrad); break;
    case FO_RMSPROP: fo_rmsprop_prepare(&a->rmsprop); break;
    case FO_ADADELTA: fo_adadelta_prepare(&a->adadelta); break;
    case FO_ADAM: fo_adam_prepare(&a->adam); break;
    }
}

#endif
