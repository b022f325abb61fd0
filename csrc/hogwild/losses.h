/* The losses of fastoptim.hogwild: value and derivative with respect to the
 * prediction p, for a target y (classification: y = +1 or -1).
 *
 * Each is written as scikit-learn 1.9's SGD computes it, operation for
 * operation, so that one thread without shuffling runs SGDClassifier's and
 * SGDRegressor's arithmetic bit for bit:
 *   - log_loss is scikit-learn's half binomial loss (sklearn/_loss/_loss.pyx.tp)
 *     of the 0/1 target t = (y + 1) / 2: the derivative expit(p) - t written
 *     ((1 - t) - t e) / (1 + e) with e = exp(-p) (exp(p) - t for p <= -37), the
 *     value log1pexp(p) - t p.  The textbook form -y / (exp(y p) + 1) is the
 *     same function but rounds differently in the last bit, and the large early
 *     steps of learning_rate='optimal' with a weak penalty amplify a last-bit
 *     difference into coefficients several percent apart within five epochs.
 *   - hinge, modified_huber and epsilon_insensitive: sklearn/linear_model/_sgd_fast.pyx.tp;
 *   - squared_error and huber: the half squared error and the Huber loss of sklearn/_loss.
 */
#ifndef FASTOPTIM_HOGWILD_LOSSES_H
#define FASTOPTIM_HOGWILD_LOSSES_H

#include <math.h>

enum fo_hw_loss {
    FO_HW_LOG_LOSS,
    FO_HW_HINGE,
    FO_HW_MODIFIED_HUBER,
    FO_HW_SQUARED_ERROR,
    FO_HW_HUBER,
    FO_HW_EPSILON_INSENSITIVE
};

/* log(1 + exp(x)) without overflow, with scikit-learn's branches. */
static inline double fo_hw_log1pexp(double x)
{
    if (x <= -37.0)
        return exp(x);
    if (x <= -2.0)
        return log1p(exp(x));
    if (x <= 18.0)
        return log(1.0 + exp(x));
    if (x <= 33.3)
        return x + exp(-x);
    return x;
}

static inline double fo_hw_loss_value(int loss, double p, double y, double epsilon)
{
    double z, r;
    switch (loss) {
    case FO_HW_LOG_LOSS:
        z = y > 0.0 ? 1.0 : 0.0;
        return fo_hw_log1pexp(p) - z * p;
    case FO_HW_HINGE:
        z = p * y;
        return z <= 1.0 ? 1.0 - z : 0.0;
    case FO_HW_MODIFIED_HUBER:
        z = p * y;
        if (z >= 1.0)
            return 0.0;
        if (z >= -1.0)
            return (1.0 - z) * (1.0 - z);
        return -4.0 * z;
    case FO_HW_SQUARED_ERROR:
        return 0.5 * (p - y) * (p - y);
    case FO_HW_HUBER:
        r = fabs(y - p);
        return r <= epsilon ? 0.5 * (r * r) : epsilon * (r - 0.5 * epsilon);
    default: /* FO_HW_EPSILON_INSENSITIVE */
        r = fabs(y - p) - epsilon;
        return r > 0.0 ? r : 0.0;
    }
}

/* d loss / d p. */
static inline double fo_hw_loss_derivative(int loss, double p, double y, double epsilon)
{
    double z, e;
    switch (loss) {
    case FO_HW_LOG_LOSS:
        z = y > 0.0 ? 1.0 : 0.0;
        if (p > -37.0) {
            e = exp(-p);
            return ((1.0 - z) - z * e) / (1.0 + e);
        }
        return exp(p) - z;
    case FO_HW_HINGE:
        return p * y <= 1.0 ? -y : 0.0;
    case FO_HW_MODIFIED_HUBER:
        z = p * y;
        if (z >= 1.0)
            return 0.0;
        if (z >= -1.0)
            return 2.0 * (1.0 - z) * -y;
        return -4.0 * y;
    case FO_HW_SQUARED_ERROR:
        return p - y;
    case FO_HW_HUBER:
        z = p - y;
        if (fabs(z) <= epsilon)
            return z;
        return z >= 0.0 ? epsilon : -epsilon;
    default: /* FO_HW_EPSILON_INSENSITIVE */
        if (y - p > epsilon)
            return -1.0;
        if (p - y > epsilon)
            return 1.0;
        return 0.0;
    }
}

#endif
