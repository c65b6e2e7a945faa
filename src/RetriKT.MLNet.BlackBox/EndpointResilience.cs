using System.ClientModel;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Polly;
using Polly.Retry;
using Polly.Timeout;

namespace RetriKT.MLNet.BlackBox;

/// <summary>
/// The retry policy of one endpoint, through Polly: each attempt has a time limit; 429, 408, 5xx, timeouts and
/// connection failures are retried with exponential backoff and jitter, or after the server's <c>Retry-After</c> when
/// it sends one (capped at <see cref="BlackBoxExtractorOptions.MaxRetryDelay"/>). Anything else fails at once.
/// </summary>
internal static class EndpointResilience
{
    /// <summary>Polly's range of a timeout (and, from zero, of a retry delay): 10 ms to 1 day.</summary>
    public static readonly TimeSpan ShortestTimeout = TimeSpan.FromMilliseconds(10), LongestWait = TimeSpan.FromDays(1);

    /// <summary>
    /// The pipeline; <paramref name="onRetry"/> is told of each retry as its wait begins: the failure, the wait, and which
    /// retry it is (1-based).
    /// </summary>
    public static ResiliencePipeline Create(BlackBoxExtractorOptions o, Action<Exception?, TimeSpan, int> onRetry)
    {
        var builder = new ResiliencePipelineBuilder();
        // MaxRetries = 0: every failure counts at once (Polly's retry strategy needs at least one attempt).
        if (o.MaxRetries > 0) builder.AddRetry(new RetryStrategyOptions
        {
            ShouldHandle = args => ValueTask.FromResult(args.Outcome.Exception is { } e && IsTransient(e, args.Context.CancellationToken)),
            MaxRetryAttempts = o.MaxRetries,
            BackoffType = DelayBackoffType.Exponential,
            UseJitter = true,
            Delay = o.RetryDelay,
            MaxDelay = o.MaxRetryDelay,
            DelayGenerator = args => ValueTask.FromResult(args.Outcome.Exception is { } e && RetryAfter(e) is { } wait
                ? (TimeSpan?)(wait < o.MaxRetryDelay ? wait : o.MaxRetryDelay) : null),
            OnRetry = args => { onRetry(args.Outcome.Exception, args.RetryDelay, args.AttemptNumber + 1); return ValueTask.CompletedTask; },
        });
        // Timeout.InfiniteTimeSpan: no limit of its own (the client's, if any, still applies).
        if (o.RequestTimeout != Timeout.InfiniteTimeSpan) builder.AddTimeout(o.RequestTimeout);
        return builder.Build();
    }

    /// <summary>Whether a failed request may succeed when repeated (never when the run itself was cancelled).</summary>
    public static bool IsTransient(Exception e, CancellationToken run)
    {
        if (run.IsCancellationRequested) return false;
        return e switch
        {
            TimeoutRejectedException => true,
            // System.ClientModel (OpenAI, Azure OpenAI): Status 0 means no response at all (connection refused or reset).
            ClientResultException c => c.Status is 0 or 408 or 429 || c.Status >= 500,
            HttpRequestException h => h.StatusCode is null or HttpStatusCode.RequestTimeout or HttpStatusCode.TooManyRequests || (int?)h.StatusCode >= 500,
            IOException or SocketException => true,
            // HttpClient's own timeout surfaces as a cancellation that is not the run's.
            OperationCanceledException => true,
            _ => e.InnerException is { } inner && IsTransient(inner, run),
        };
    }

    /// <summary>The server's Retry-After (seconds or an HTTP date), when the failure carries a response that has one.</summary>
    public static TimeSpan? RetryAfter(Exception e)
    {
        if (e is not ClientResultException c || c.GetRawResponse() is not { } response) return null;
        if (!response.Headers.TryGetValue("Retry-After", out var value) || string.IsNullOrWhiteSpace(value)) return null;
        if (double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) && seconds >= 0) return TimeSpan.FromSeconds(seconds);
        if (DateTimeOffset.TryParse(value, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var at))
        {
            var wait = at - DateTimeOffset.UtcNow;
            return wait > TimeSpan.Zero ? wait : TimeSpan.Zero;
        }
        return null;
    }
}
