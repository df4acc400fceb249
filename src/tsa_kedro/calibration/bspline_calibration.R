# Monotone B-spline probability calibration.
#
# Fits P(tag = 1 | score) = plogis(s(score)), where s is a cubic B-spline on [0, 1] with
# non-decreasing coefficients (so the calibrated probability never decreases with the
# score), by penalised iteratively reweighted least squares in which every step is a
# quadratic programme solved by quadprog::solve.QP.
#
# Dependencies: base R, splines, quadprog, jsonlite. Entry points:
#   fit_bspline_calibration(scores, tags, ...)  -> list (the exported parameters)
#   predict_bspline_calibration(parameters, scores) -> calibrated probabilities
#   bspline_parameters_json(parameters)          -> the parameters as a JSON string
#   write_bspline_parameters(parameters, path)   -> writes that JSON (temp file, rename)
# Run as a script: Rscript bspline_calibration.R scores.csv tags.csv out.json
#   (CSV files with a `score` and a `tag` column, same row order).
#
# Rejected inputs (each stops with a message naming the problem): scores and tags of
# different lengths; NA/NaN or non-finite values; scores or tags outside [0, 1]; tags
# other than 0/1; fewer than `min_records` records or `min_positives` positives; tags
# that are all 0 or all 1.

suppressPackageStartupMessages({
  library(splines)
  library(quadprog)
  library(jsonlite)
})

BSPLINE_FORMAT_VERSION <- 1L
BSPLINE_DEGREE <- 3L
SCORE_RESOLUTION <- 1e-6

calibration_error <- function(...) stop(paste0(...), call. = FALSE)

# ---------------------------------------------------------------------------------------
# Input validation and aggregation
# ---------------------------------------------------------------------------------------

validate_calibration_input <- function(scores, tags, min_records, min_positives) {
  if (!is.numeric(scores)) calibration_error("scores must be numeric")
  if (!is.numeric(tags)) calibration_error("tags must be numeric")
  if (length(scores) != length(tags)) {
    calibration_error(
      "scores and tags differ in length: ", length(scores), " scores, ",
      length(tags), " tags"
    )
  }
  if (anyNA(scores)) {
    calibration_error("scores contain ", sum(is.na(scores)), " NA/NaN values")
  }
  if (anyNA(tags)) calibration_error("tags contain ", sum(is.na(tags)), " NA/NaN values")
  if (length(scores) < min_records) {
    calibration_error(
      "too few records: ", length(scores), " (at least ", min_records, " required)"
    )
  }
  bad_scores <- sum(scores < 0 | scores > 1)
  if (bad_scores > 0) {
    calibration_error(
      "scores must lie in [0, 1]: ", bad_scores, " outside (range ",
      format(min(scores)), " .. ", format(max(scores)), ")"
    )
  }
  bad_tags <- sum(tags < 0 | tags > 1)
  if (bad_tags > 0) {
    calibration_error(
      "tags must lie in [0, 1]: ", bad_tags, " outside (range ",
      format(min(tags)), " .. ", format(max(tags)), ")"
    )
  }
  if (any(tags != 0 & tags != 1)) {
    calibration_error(
      "tags must be 0 or 1: ", sum(tags != 0 & tags != 1), " fractional values"
    )
  }
  positives <- sum(tags)
  if (positives == 0) calibration_error("degenerate tags: all ", length(tags), " tags are 0")
  if (positives == length(tags)) {
    calibration_error("degenerate tags: all ", length(tags), " tags are 1")
  }
  if (positives < min_positives) {
    calibration_error(
      "too few positives: ", positives, " (at least ", min_positives, " required)"
    )
  }
  invisible(TRUE)
}

# Rounds scores to SCORE_RESOLUTION and collapses them to (score, count, positives) rows,
# sorted by score. Works on integer keys so a million scores aggregate in milliseconds.
aggregate_scores <- function(scores, tags) {
  key <- as.integer(round(scores / SCORE_RESOLUTION)) + 1L
  nbins <- as.integer(round(1 / SCORE_RESOLUTION)) + 1L
  count <- tabulate(key, nbins)
  positives <- tabulate(key[tags == 1], nbins)
  keep <- which(count > 0)
  data.frame(
    score = (keep - 1L) * SCORE_RESOLUTION,
    count = as.numeric(count[keep]),
    positives = as.numeric(positives[keep])
  )
}

# ---------------------------------------------------------------------------------------
# Knots
# ---------------------------------------------------------------------------------------

base_knot_count <- function(n_records) {
  if (n_records < 1e4) 20L else if (n_records <= 1e6) 50L else 100L
}

# Score value below which a fraction `prob` of the records lie (aggregated data).
weighted_quantile <- function(agg, prob) {
  cum <- cumsum(agg$count) / sum(agg$count)
  agg$score[pmin(findInterval(prob, cum, left.open = TRUE) + 1L, nrow(agg))]
}

# Interior knots: record quantiles (base count by data size), plus extra knots whose
# quantile levels approach 1 geometrically inside the top `tail_fraction` of records
# (where positives concentrate and the curve rises fastest). Candidates closer than
# `min_knot_gap` or leaving fewer than `min_interval_records` records in an interval are
# dropped, which merges thin intervals into their neighbours.
place_knots <- function(agg, tail_fraction, tail_knots, min_interval_records) {
  n_records <- sum(agg$count)
  base <- base_knot_count(n_records)
  levels <- seq_len(base - 1L) / base
  if (tail_knots > 0) levels <- c(levels, 1 - tail_fraction * 2^-(seq_len(tail_knots) - 1))
  candidates <- sort(unique(weighted_quantile(agg, sort(levels))))
  candidates <- candidates[candidates > 0 & candidates < 1]

  min_knot_gap <- 2 * SCORE_RESOLUTION
  cum <- c(0, cumsum(agg$count))
  records_below <- function(x) cum[findInterval(x, agg$score, left.open = TRUE) + 1L]
  kept <- numeric(0)
  last <- 0
  for (knot in candidates) {
    enough <- records_below(knot) - records_below(last) >= min_interval_records
    if (enough && knot - last >= min_knot_gap) {
      kept <- c(kept, knot)
      last <- knot
    }
  }
  # The last interval [last kept knot, 1] must be thick enough too.
  while (length(kept) > 0 &&
         (n_records - records_below(kept[length(kept)]) < min_interval_records ||
          1 - kept[length(kept)] < min_knot_gap)) {
    kept <- kept[-length(kept)]
  }
  list(interior = kept, base_count = base, candidate_count = length(candidates))
}

padded_knots <- function(interior) {
  c(rep(0, BSPLINE_DEGREE + 1L), interior, rep(1, BSPLINE_DEGREE + 1L))
}

# ---------------------------------------------------------------------------------------
# Banded design: each score touches only degree + 1 = 4 basis functions, so the design is
# kept as an (m x 4) matrix of values plus the index of the first non-zero column. This
# keeps memory at O(m) and every IRLS product at O(m) for a million scores.
# ---------------------------------------------------------------------------------------

banded_design <- function(x, knots, chunk_size = 50000L) {
  order <- BSPLINE_DEGREE + 1L
  breaks <- unique(knots)
  first <- findInterval(x, breaks, rightmost.closed = TRUE)
  values <- matrix(0, length(x), order)
  for (start in seq(1L, length(x), by = chunk_size)) {
    rows <- start:min(start + chunk_size - 1L, length(x))
    full <- splineDesign(knots, x[rows], ord = order, outer.ok = FALSE)
    for (j in seq_len(order)) {
      values[rows, j] <- full[cbind(seq_along(rows), first[rows] + j - 1L)]
    }
  }
  list(values = values, first = first, n_coef = length(knots) - order)
}

linear_predictor <- function(design, beta) {
  v <- design$values
  f <- design$first
  v[, 1] * beta[f] + v[, 2] * beta[f + 1L] + v[, 3] * beta[f + 2L] + v[, 4] * beta[f + 3L]
}

# t(B) %*% diag(w) %*% B and t(B) %*% r for the banded design: the 10 distinct products
# of the 4 local basis values (times w) and the 4 products with r are summed per knot
# interval in a single rowsum() pass, then scattered into the k x k band.
BAND_PAIRS <- which(upper.tri(diag(4), diag = TRUE), arr.ind = TRUE)

weighted_crossprod <- function(design, w, r) {
  k <- design$n_coef
  v <- design$values
  products <- cbind(
    v[, BAND_PAIRS[, 1], drop = FALSE] * v[, BAND_PAIRS[, 2], drop = FALSE] * w,
    v * r
  )
  sums <- rowsum(products, design$first, reorder = TRUE)
  ids <- as.integer(rownames(sums))
  gram <- matrix(0, k, k)
  for (pair in seq_len(nrow(BAND_PAIRS))) {
    a <- BAND_PAIRS[pair, 1]
    b <- BAND_PAIRS[pair, 2]
    idx <- cbind(ids + a - 1L, ids + b - 1L)
    gram[idx] <- gram[idx] + sums[, pair]
    if (a != b) gram[idx[, 2:1, drop = FALSE]] <- gram[idx[, 2:1, drop = FALSE]] + sums[, pair]
  }
  rhs <- numeric(k)
  for (a in 1:4) {
    rhs[ids + a - 1L] <- rhs[ids + a - 1L] + sums[, nrow(BAND_PAIRS) + a]
  }
  list(gram = gram, rhs = rhs)
}

# ---------------------------------------------------------------------------------------
# Likelihood pieces (binomial, logit link) on aggregated data
# ---------------------------------------------------------------------------------------

# log(1 + exp(eta)) without overflow.
log1pexp <- function(eta) pmax(eta, 0) + log1p(exp(-abs(eta)))

binomial_deviance <- function(eta, count, positives) {
  # -2 log-likelihood of the aggregated binomial data (saturated terms dropped).
  2 * sum(count * log1pexp(eta) - positives * eta)
}

saturated_loglik_term <- function(count, positives) {
  # 2 * sum(y log(y/n) + (n - y) log((n - y)/n)), so deviance = above + this.
  p <- positives / count
  term <- ifelse(positives > 0, positives * log(p), 0) +
    ifelse(positives < count, (count - positives) * log1p(-p), 0)
  2 * sum(term)
}

second_difference_penalty <- function(k) {
  d <- diff(diag(k), differences = 2)
  crossprod(d)
}

monotone_constraints <- function(k) {
  # Columns are constraints: beta[j + 1] - beta[j] >= 0.
  a <- matrix(0, k, k - 1L)
  a[cbind(1:(k - 1L), 1:(k - 1L))] <- -1
  a[cbind(2:k, 1:(k - 1L))] <- 1
  a
}

# Euclidean projection onto the non-decreasing cone (one small QP).
project_monotone <- function(beta) {
  k <- length(beta)
  solve.QP(diag(k), beta, monotone_constraints(k), rep(0, k - 1L))$solution
}

# ---------------------------------------------------------------------------------------
# Start values: unconstrained binomial glm on a coarse aggregation
# ---------------------------------------------------------------------------------------

# glm on every distinct score would build an (m x k) dense model matrix (hundreds of MB
# at a million scores); start values need only the shape of the curve, so the data are
# first pooled into at most `start_bins` equal-mass bins (count-weighted mean score).
glm_start <- function(agg, knots, start_bins, coefficient_bound) {
  cum <- cumsum(agg$count)
  bin <- pmin(ceiling(cum / sum(agg$count) * start_bins), start_bins)
  count <- as.numeric(rowsum(agg$count, bin)[, 1])
  positives <- as.numeric(rowsum(agg$positives, bin)[, 1])
  score <- as.numeric(rowsum(agg$score * agg$count, bin)[, 1]) / count
  basis <- splineDesign(knots, score, ord = BSPLINE_DEGREE + 1L)
  fit <- suppressWarnings(glm.fit(
    x = basis, y = positives / count, weights = count,
    family = binomial(), control = glm.control(maxit = 25)
  ))
  beta <- fit$coefficients
  # Basis functions without support in the pooled data get no estimate: borrow the
  # nearest estimated neighbour. Separation drives some estimates towards +/- infinity,
  # so they are bounded by the logit of half a record out of all records.
  beta[is.na(beta)] <- NA
  if (all(is.na(beta))) beta[] <- qlogis(sum(agg$positives) / sum(agg$count))
  for (j in which(is.na(beta))) {
    known <- which(!is.na(beta))
    beta[j] <- beta[known[which.min(abs(known - j))]]
  }
  beta <- pmin(pmax(beta, -coefficient_bound), coefficient_bound)
  list(beta = project_monotone(beta), glm_converged = isTRUE(fit$converged))
}

# ---------------------------------------------------------------------------------------
# The fit
# ---------------------------------------------------------------------------------------

#' Fit a monotone B-spline calibration curve.
#'
#' @param scores,tags numeric vectors of equal length; scores in [0, 1], tags 0/1.
#' @param max_iterations IRLS iteration cap.
#' @param coefficient_tolerance stop when the largest coefficient change is below this.
#' @param deviance_tolerance stop when the relative change of the penalised deviance is
#'   below this.
#' @param penalty,ridge weights on the deviance scale of the second-difference penalty
#'   and of a ridge towards the logit of the overall positive rate r:
#'   penalised deviance = deviance + penalty * sum(diff(beta, differences = 2)^2)
#'                        + ridge * sum((beta - qlogis(r))^2).
#'   The ridge makes the objective strictly convex: without it, coefficients over score
#'   ranges without positives drift linearly towards -Inf (a straight line costs nothing
#'   under a second-difference penalty), which slows IRLS to a crawl.
#' @return a list (see bspline_parameters_json for the exported layout).
fit_bspline_calibration <- function(scores, tags,
                                    max_iterations = 100L,
                                    coefficient_tolerance = 1e-6,
                                    deviance_tolerance = 1e-10,
                                    penalty = 1,
                                    ridge = 1e-3,
                                    min_records = 1000L,
                                    min_positives = 10L,
                                    tail_fraction = 0.1,
                                    tail_knots = 8L,
                                    min_interval_records = 50L,
                                    start_bins = 1000L,
                                    max_abs_coefficient = 40,
                                    min_distinct_fitted = 10L) {
  started <- proc.time()[["elapsed"]]
  scores <- as.numeric(scores)
  tags <- as.numeric(tags)
  validate_calibration_input(scores, tags, min_records, min_positives)
  check_setting <- function(ok, name, requirement) {
    if (!isTRUE(ok)) calibration_error(name, " must be ", requirement)
  }
  check_setting(max_iterations >= 1, "max_iterations", "at least 1")
  check_setting(coefficient_tolerance > 0, "coefficient_tolerance", "positive")
  check_setting(deviance_tolerance >= 0, "deviance_tolerance", "non-negative")
  check_setting(penalty >= 0, "penalty", "non-negative")
  check_setting(ridge > 0, "ridge", "positive")
  check_setting(tail_fraction > 0 && tail_fraction < 1, "tail_fraction", "in (0, 1)")
  check_setting(tail_knots >= 0, "tail_knots", "non-negative")
  check_setting(min_interval_records >= 1, "min_interval_records", "at least 1")
  check_setting(start_bins >= 2, "start_bins", "at least 2")
  check_setting(max_abs_coefficient > 0, "max_abs_coefficient", "positive")

  agg <- aggregate_scores(scores, tags)
  n_records <- sum(agg$count)
  n_positives <- sum(agg$positives)
  knot_plan <- place_knots(agg, tail_fraction, tail_knots, min_interval_records)
  knots <- padded_knots(knot_plan$interior)
  design <- banded_design(agg$score, knots)
  k <- design$n_coef

  start_bound <- abs(qlogis(0.5 / n_records))
  start <- glm_start(agg, knots, start_bins, start_bound)
  beta <- start$beta

  pen <- second_difference_penalty(k)
  constraints <- monotone_constraints(k)
  constraint_rhs <- rep(0, k - 1L)
  # Shrinkage target of the ridge: the logit of the overall positive rate.
  null_logit <- qlogis(n_positives / n_records)
  objective <- function(eta, b) {
    binomial_deviance(eta, agg$count, agg$positives) + penalty * sum((pen %*% b) * b) +
      ridge * sum((b - null_logit)^2)
  }

  eta <- linear_predictor(design, beta)
  current <- objective(eta, beta)
  start_objective <- current
  status <- "iteration_cap"
  iterations <- 0L
  coefficient_change <- NA_real_
  relative_change <- NA_real_
  step_halvings <- 0L
  for (iteration in seq_len(max_iterations)) {
    iterations <- iteration
    p <- plogis(eta)
    w <- agg$count * p * (1 - p)
    # Newton step of the penalised log-likelihood as a QP:
    #   min 1/2 b' H b - b' (B'(W eta + y - n p) + ridge * null_logit)
    #   s.t. b non-decreasing,  with H = B'WB + penalty P + ridge I,
    # which minimises the quadratic model of half the penalised deviance.
    cross <- weighted_crossprod(design, w, w * eta + agg$positives - agg$count * p)
    hessian <- cross$gram + penalty * pen + diag(ridge, k)
    linear_term <- cross$rhs + ridge * null_logit
    proposal <- solve.QP(hessian, linear_term, constraints, constraint_rhs)$solution
    direction <- proposal - beta

    # Step halving: both end points satisfy the constraints, so every point between them
    # does; accept the first step length that does not increase the objective.
    step <- 1
    repeat {
      candidate <- beta + step * direction
      candidate_eta <- linear_predictor(design, candidate)
      candidate_objective <- objective(candidate_eta, candidate)
      if (is.finite(candidate_objective) &&
          candidate_objective <= current + 1e-12 * abs(current)) break
      step <- step / 2
      step_halvings <- step_halvings + 1L
      if (step < 1e-10) break
    }
    if (step < 1e-10) {
      # No descent along the Newton direction: the current point is optimal to
      # numerical precision.
      coefficient_change <- 0
      relative_change <- 0
      status <- "converged"
      break
    }
    coefficient_change <- max(abs(candidate - beta))
    relative_change <- abs(current - candidate_objective) / (abs(candidate_objective) + 0.1)
    beta <- candidate
    eta <- candidate_eta
    current <- candidate_objective
    if (coefficient_change < coefficient_tolerance || relative_change < deviance_tolerance) {
      status <- "converged"
      break
    }
  }

  p <- plogis(eta)
  deviance <- binomial_deviance(eta, agg$count, agg$positives) +
    saturated_loglik_term(agg$count, agg$positives)
  base_rate <- n_positives / n_records
  null_eta <- rep(qlogis(base_rate), nrow(agg))
  null_deviance <- binomial_deviance(null_eta, agg$count, agg$positives) +
    saturated_loglik_term(agg$count, agg$positives)
  log_loss <- binomial_deviance(eta, agg$count, agg$positives) / (2 * n_records)
  null_log_loss <- binomial_deviance(null_eta, agg$count, agg$positives) / (2 * n_records)
  brier <- sum(agg$positives * (1 - p)^2 + (agg$count - agg$positives) * p^2) / n_records
  null_brier <- base_rate * (1 - base_rate)
  n_distinct_fitted <- length(unique(signif(p, 6)))

  # Quality checks: fail loudly with the reason.
  if (!all(is.finite(beta))) {
    calibration_error("quality check failed: non-finite spline coefficients")
  }
  if (max(abs(beta)) > max_abs_coefficient) {
    calibration_error(
      "quality check failed: largest |coefficient| ", format(max(abs(beta)), digits = 4),
      " exceeds max_abs_coefficient = ", max_abs_coefficient
    )
  }
  if (n_distinct_fitted < min_distinct_fitted) {
    calibration_error(
      "quality check failed: only ", n_distinct_fitted,
      " distinct fitted probabilities (at least ", min_distinct_fitted, " required)"
    )
  }
  # A fit without signal converges to the constant rate itself (the ridge's target), so
  # "below" means below by more than rounding.
  if (!(log_loss < null_log_loss * (1 - 1e-9))) {
    calibration_error(
      "quality check failed: log loss ", format(log_loss, digits = 6),
      " is not below the constant-rate fit's ", format(null_log_loss, digits = 6)
    )
  }

  list(
    format_version = BSPLINE_FORMAT_VERSION,
    link = "logit",
    degree = BSPLINE_DEGREE,
    knots = knots,
    coefficients = as.numeric(beta),
    domain = c(0, 1),
    status = status,
    iterations = iterations,
    fit_statistics = list(
      n_records = as.integer(n_records),
      n_positives = as.integer(n_positives),
      n_distinct_scores = nrow(agg),
      n_coefficients = k,
      n_interior_knots = length(knot_plan$interior),
      n_candidate_knots = knot_plan$candidate_count,
      base_knot_count = knot_plan$base_count,
      deviance = deviance,
      null_deviance = null_deviance,
      log_loss = log_loss,
      null_log_loss = null_log_loss,
      brier = brier,
      null_brier = null_brier,
      penalised_objective_start = start_objective,
      penalised_objective = current,
      glm_start_converged = start$glm_converged,
      last_coefficient_change = coefficient_change,
      last_relative_change = relative_change,
      step_halvings = step_halvings,
      active_constraints = sum(abs(diff(beta)) < 1e-9),
      max_abs_coefficient = max(abs(beta)),
      n_distinct_fitted = n_distinct_fitted,
      elapsed_seconds = proc.time()[["elapsed"]] - started
    ),
    settings = list(
      max_iterations = max_iterations,
      coefficient_tolerance = coefficient_tolerance,
      deviance_tolerance = deviance_tolerance,
      penalty = penalty,
      ridge = ridge,
      min_records = min_records,
      min_positives = min_positives,
      tail_fraction = tail_fraction,
      tail_knots = tail_knots,
      min_interval_records = min_interval_records,
      start_bins = start_bins,
      max_abs_coefficient = max_abs_coefficient,
      min_distinct_fitted = min_distinct_fitted,
      score_resolution = SCORE_RESOLUTION
    )
  )
}

# ---------------------------------------------------------------------------------------
# Prediction and export
# ---------------------------------------------------------------------------------------

predict_bspline_calibration <- function(parameters, scores) {
  x <- pmin(pmax(as.numeric(scores), 0), 1)
  basis <- splineDesign(
    as.numeric(parameters$knots), x, ord = as.integer(parameters$degree) + 1L
  )
  plogis(as.vector(basis %*% as.numeric(parameters$coefficients)))
}

bspline_parameters_json <- function(parameters) {
  as.character(toJSON(parameters, auto_unbox = TRUE, digits = I(17), pretty = TRUE))
}

write_bspline_parameters <- function(parameters, path) {
  tmp <- paste0(path, ".tmp")
  writeLines(bspline_parameters_json(parameters), tmp)
  if (!file.rename(tmp, path)) calibration_error("could not write ", path)
  invisible(path)
}

main <- function(args) {
  if (length(args) != 3) {
    calibration_error("usage: Rscript bspline_calibration.R scores.csv tags.csv out.json")
  }
  scores <- read.csv(args[[1]])
  tags <- read.csv(args[[2]])
  if (!"score" %in% names(scores)) calibration_error(args[[1]], " has no `score` column")
  if (!"tag" %in% names(tags)) calibration_error(args[[2]], " has no `tag` column")
  parameters <- fit_bspline_calibration(scores$score, tags$tag)
  write_bspline_parameters(parameters, args[[3]])
  message("wrote ", args[[3]], " (status ", parameters$status, ", ",
          parameters$iterations, " iterations)")
}

if (sys.nframe() == 0L && !interactive()) main(commandArgs(trailingOnly = TRUE))
