/* The losses of fastoptim.hogwild: value and derivative with respect to the
 * prediction p, for a target y (classification: y = +1 or -1), as scikit-learn's
 * SGD defines them.
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

static inline double fo_hw_loss_value(int loss, double p, double y, double epsilon)
{
    double z, r;
    switch (loss) {
    case FO_HW_LOG_LOSS:
        z = p * y;
        if (z > 18.0)
            return exp(-z);
        if (z < -18.0)
            return -z;
        return log1p(exp(-z));
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
        r = fabs(p - y);
        return r <= epsilon ? 0.5 * r * r : epsilon * r - 0.5 * epsilon * epsilon;
    default: /* FO_HW_EPSILON_INSENSITIVE */
        r = fabs(y - p) - epsilon;
        return r > 0.0 ? r : 0.0;
    }
}

/* d loss / d p. */
static inline double fo_hw_loss_derivative(int loss, double p, double y, double epsilon)
{
    double z;
    switch (loss) {
    case FO_HW_LOG_LOSS:
        z = p * y;
        if (z > 18.0)
            return -y * exp(-z);
        if (z < -18.0)
            return -y;
        return -y / (exp(z) + 1.0);
    case FO_HW_HINGE:
        return p * y <= 1.0 ? -y : 0.0;
    case FO_HW_MODIFIED_HUBER:
        z = p * y;
        if (z >= 1.0)
            return 0.0;
        if (z >= -1.0)
            return -2.0 * (1.0 - z) * y;
        return -4.0 * y;
    case FO_HW_SQUARED_ERROR:
        return p - y;
    case FO_HW_HUBER:
        z = p - y;
        if (fabs(z) <= epsilon)
            return z;
        return z > 0.0 ? epsilon : -epsilon;
    default: /* FO_HW_EPSILON_INSENSITIVE */
        z = y - p;
        if (z > epsilon)
            return -1.0;
        if (z < -epsilon)
            return 1.0;
        return 0.0;
    }
}

#endif
