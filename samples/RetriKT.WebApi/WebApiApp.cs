using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Hosting;

namespace RetriKT.WebApi;

/// <summary>Builds the web application (Program runs it; tests and the benchmark host it on 127.0.0.1).</summary>
public static class WebApiApp
{
    /// <summary>
    /// Creates the app. The model file comes from configuration key <c>ModelPath</c> (appsettings.json, environment
    /// variable <c>ModelPath</c>, or <c>--ModelPath path</c>); a relative path is resolved against the working directory
    /// of the caller (<c>dotnet run --project samples/RetriKT.WebApi</c> keeps it: see the csproj). appsettings.json is
    /// read from the app's own folder.
    /// </summary>
    /// <param name="args">Command-line arguments (configuration overrides such as <c>--ModelPath</c>, <c>--urls</c>).</param>
    /// <exception cref="ArgumentException">A switch names no setting of this server or its host, a Serving setting holds a value its type cannot (<c>--Serving:MaxTextLength abc</c>), or Serving:MaxTextLength is below 1.</exception>
    /// <param name="configure">Extra configuration of the builder (tests: logging, settings).</param>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        RetriKT.Samples.CommandLineSwitches.Check(args, ["ModelPath", .. RetriKT.Samples.CommandLineSwitches.Of<ServingOptions>("Serving")]);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        configure?.Invoke(builder);

        var modelPath = builder.Configuration["ModelPath"];
        if (string.IsNullOrWhiteSpace(modelPath))
            throw new InvalidOperationException("No model configured: set ModelPath (appsettings.json, env var ModelPath, or --ModelPath <model.zip>).");
        modelPath = Path.GetFullPath(modelPath);
        ServingOptions serving;
        // A value the setting's type cannot hold (--Serving:MaxTextLength abc) is a mistake on the command line, as an
        // unknown switch is: exit code 2 with the binder's one line, not 1 as for a model that cannot be served.
        try { serving = builder.Configuration.GetSection("Serving").Get<ServingOptions>() ?? new ServingOptions(); }
        catch (InvalidOperationException e) { throw new ArgumentException(e.Message, e); }
        // Below 1 the server would start, report Healthy and refuse every request as too long.
        if (serving.MaxTextLength < 1)
            throw new ArgumentException($"Serving:MaxTextLength must be at least 1, found {serving.MaxTextLength}: every request would be refused as too long.");
        builder.Services.Configure<ServingOptions>(builder.Configuration.GetSection("Serving"));

        builder.Services.AddPredictionEnginePool<TextInput, TextPrediction>()
            .FromFile(modelName: string.Empty, filePath: modelPath, watchForChanges: serving.WatchModelFile)
            .WarmUpOnStart();
        builder.Services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.TypeInfoResolverChain.Insert(0, WebApiJsonContext.Default);
            // {"text": "a", "text": "b"} was answered for the last text alone: a request that names a text twice is a 400.
            o.SerializerOptions.AllowDuplicateProperties = false;
            // {"text": "a", "hypothesis": "b"} (a pair under another name than text2, or a misspelt "txt2") was answered
            // for the text alone: a property the API does not know is a 400 that names it.
            o.SerializerOptions.UnmappedMemberHandling = System.Text.Json.Serialization.JsonUnmappedMemberHandling.Disallow;
        });
        builder.Services.AddProblemDetails();
        // Bind failures throw, so BadRequestToProblemDetails can say what was wrong with the body.
        builder.Services.Configure<RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
        builder.Services.AddExceptionHandler<BadRequestToProblemDetails>();
        builder.Services.AddExceptionHandler<ShutdownToProblemDetails>();
        builder.Services.AddHealthChecks().AddCheck<ModelHealthCheck>("model");
        builder.Services.AddOpenApi();

        var app = builder.Build();
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        // A body is read whole, and its text built, before the text's length is checked: under Kestrel's own bound
        // (30 MB) each refused request could hold ~90 MB of the server's memory. Bound it by the longest valid body.
        var maxBodyBytes = MaxRequestBodyBytes(serving);
        app.Use((context, next) =>
        {
            if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodySize)
                bodySize.MaxRequestBodySize = maxBodyBytes;   // a body sent in chunks is cut off here (413)
            if (context.Request.ContentLength > maxBodyBytes)
                throw new BadHttpRequestException(
                    $"The request body has {context.Request.ContentLength} bytes; at most {maxBodyBytes} are accepted " +
                    $"(Serving:MaxTextLength = {serving.MaxTextLength} characters per text).", StatusCodes.Status413PayloadTooLarge);
            // Binding a JSON body whose charset .NET cannot decode (or is quoted, as HTTP allows) throws an
            // InvalidOperationException (a 500): unquote it, and answer an unknown one with 415.
            return UnknownJsonCharset(context.Request) is { } charset
                ? throw new BadHttpRequestException(
                    $"The request body's charset '{charset}' is not a known encoding; send JSON in UTF-8.", StatusCodes.Status415UnsupportedMediaType)
                : next(context);
        });
        app.MapOpenApi();
        // The default body is the status alone: an operator seeing "Degraded" had to find the reason in the log.
        app.MapHealthChecks("/healthz", new Microsoft.AspNetCore.Diagnostics.HealthChecks.HealthCheckOptions { ResponseWriter = WriteHealth });
        app.MapPost("/predict", Predict)
            .WithName("Predict")
            .WithSummary("Classifies a text: label and score per label.");
        app.MapPost("/explain", Explain)
            .WithName("Explain")
            .WithSummary("Classifies a text and lists the retrieved neighbours behind the prediction.");
        return app;
    }

    /// <summary>
    /// The longest body a valid request can have: two texts of <see cref="ServingOptions.MaxTextLength"/> characters,
    /// each escaped in JSON (<c>\uXXXX</c>, 6 bytes), plus room for the names and whitespace.
    /// </summary>
    private static long MaxRequestBodyBytes(ServingOptions serving) => 2L * 6 * Math.Max(0, serving.MaxTextLength) + 4096;

    /// <summary>
    /// The charset of a JSON request that ASP.NET Core's JSON reading would refuse (same test), else null. A quoted
    /// charset (<c>charset="utf-8"</c>, which that reading does not unquote) is unquoted in the request's Content-Type.
    /// </summary>
    private static string? UnknownJsonCharset(HttpRequest request)
    {
        if (!request.HasJsonContentType() ||
            !Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(request.ContentType, out var mediaType)) return null;
        var charset = mediaType.Charset;
        if (charset.HasValue && charset.StartsWith("\"", StringComparison.Ordinal))
        {
            mediaType.Charset = Microsoft.Net.Http.Headers.HeaderUtilities.RemoveQuotes(charset);
            request.ContentType = mediaType.ToString();
            charset = mediaType.Charset;
        }
        if (!charset.HasValue || charset.Equals("utf-8", StringComparison.OrdinalIgnoreCase)) return null;
        try
        {
            System.Text.Encoding.GetEncoding(charset.Value!);
            return null;
        }
        catch (ArgumentException)
        {
            return charset.Value;
        }
    }

    private static Results<Ok<PredictResponse>, ValidationProblem> Predict(PredictRequest? request,
        PredictionEnginePool<TextInput, TextPrediction> pool, IOptions<ServingOptions> serving)
    {
        if (Validate(request, serving.Value) is { } problem) return problem;
        var engine = pool.GetPredictionEngine();
        try
        {
            if (ValidateSecondText(request!, FindRetrievalClassifier(pool.GetModel(engine)), serving.Value) is { } pairProblem) return pairProblem;
            return TypedResults.Ok(Classify(pool, engine, request!));
        }
        finally
        {
            pool.ReturnPredictionEngine(engine);
        }
    }

    private static Results<Ok<ExplainResponse>, ValidationProblem> Explain(PredictRequest? request,
        PredictionEnginePool<TextInput, TextPrediction> pool, IOptions<ServingOptions> serving)
    {
        if (Validate(request, serving.Value) is { } problem) return problem;
        // One rented engine for the whole response: the prediction and the neighbours come from the same model
        // generation, which a concurrent reload cannot dispose before the engine is returned.
        var engine = pool.GetPredictionEngine();
        try
        {
            var student = FindRetrievalClassifier(pool.GetModel(engine));
            if (ValidateSecondText(request!, student, serving.Value) is { } pairProblem) return pairProblem;
            var prediction = Classify(pool, engine, request!);
            // A RetriKT model explains itself with the knowledge-store samples it retrieved; other models have none.
            if (student is null) return TypedResults.Ok(new ExplainResponse(prediction, [], []));
            var why = student.Explain(request!.Text!, request.Text2, NeighboursToExplain);
            var parts = new List<ExplainedPart> { Part("head", why.Head), Part("retrieval", why.Retrieval) };
            if (why.TermMatch is { } terms) parts.Add(Part("termMatch", terms));
            return TypedResults.Ok(new ExplainResponse(prediction, Neighbours(why.Prediction.Neighbors), parts));

            ExplainedPart Part(string name, RetriKT.MLNet.Student.PredictionPart part) => new(name, part.Weight,
                student.LabelNames.Select((label, i) => (label, i)).ToDictionary(l => l.label, l => part.Scores[l.i]), Neighbours(part.Neighbors));
        }
        finally
        {
            pool.ReturnPredictionEngine(engine);
        }
    }

    private const int NeighboursToExplain = 3;

    private static List<Neighbour> Neighbours(IEnumerable<RetriKT.MLNet.Student.RetrievedNeighbor> neighbours)
        => neighbours.Select(n => new Neighbour(n.Text ?? "", n.Label, n.Similarity, n.Text2)).ToList();

    private static RetriKT.MLNet.Student.RetrievalClassifierTransformer? FindRetrievalClassifier(Microsoft.ML.ITransformer model) => model switch
    {
        RetriKT.MLNet.Student.RetrievalClassifierTransformer student => student,
        IEnumerable<Microsoft.ML.ITransformer> chain => chain.Select(FindRetrievalClassifier).FirstOrDefault(s => s is not null),
        _ => null,
    };

    private static ValidationProblem? Validate(PredictRequest? request, ServingOptions serving)
    {
        string? error = null;
        if (request is null) error = "A JSON body {\"text\": \"...\"} is required.";
        else if (!HasVisibleText(request.Text)) error = "The text must not be empty.";
        else if (request.Text.Length > serving.MaxTextLength)
            error = $"The text has {request.Text.Length} characters; at most {serving.MaxTextLength} are accepted.";
        return error is null ? null : TypedResults.ValidationProblem(new Dictionary<string, string[]> { ["text"] = [error] });
    }

    /// <summary>
    /// Whether <paramref name="text"/> has a character the tokenizer keeps: a text of only whitespace, control, zero-width
    /// or private-use characters and combining marks would be answered as an empty one.
    /// </summary>
    private static bool HasVisibleText([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] string? text) =>
        RetriKT.MLNet.Text.TextTokenizingTransformer.HasWordCharacter(text);

    /// <summary>
    /// A sentence-pair model (<paramref name="student"/>, the model's RetriKT student, reads a second text column) needs
    /// <c>text2</c> (scored without it, every pair would be a pair with an empty text); a model of one text refuses it
    /// rather than leave it unread.
    /// </summary>
    private static ValidationProblem? ValidateSecondText(PredictRequest request, RetriKT.MLNet.Student.RetrievalClassifierTransformer? student, ServingOptions serving)
    {
        bool pair = student?.SecondTextColumnName is not null;
        string? error = null;
        if (pair && !HasVisibleText(request.Text2))
            error = "This model classifies sentence pairs: the second text (text2) must not be empty.";
        else if (!pair && request.Text2 is not null)
            error = "This model classifies one text: leave text2 out.";
        else if (request.Text2 is { } text2 && text2.Length > serving.MaxTextLength)
            error = $"The second text has {text2.Length} characters; at most {serving.MaxTextLength} are accepted.";
        return error is null ? null : TypedResults.ValidationProblem(new Dictionary<string, string[]> { ["text2"] = [error] });
    }

    /// <summary>Predicts with a rented engine; the generation reported is the engine's, not the pool's newest.</summary>
    private static PredictResponse Classify(PredictionEnginePool<TextInput, TextPrediction> pool, PredictionEngine<TextInput, TextPrediction> engine, PredictRequest request)
    {
        var output = engine.Predict(new TextInput { Text = request.Text!, Text2 = request.Text2 ?? "" });
        var labels = LabelNames.For(engine.OutputSchema, output.Score.Length);
        var scores = new Dictionary<string, float>(output.Score.Length);
        for (var i = 0; i < output.Score.Length; i++) scores[labels[i]] = output.Score[i];
        return new PredictResponse(output.PredictedLabel, scores, pool.GetModelGeneration(engine));
    }

    /// <summary>Label names of the Score slots, read once per model (engine output schema) from its annotations.</summary>
    private static class LabelNames
    {
        private static readonly ConditionalWeakTable<DataViewSchema, string[]> Cache = new();

        public static string[] For(DataViewSchema schema, int count) =>
            Cache.GetValue(schema, s => Read(s, count)) is { } names && names.Length == count ? names : Indices(count);

        private static string[] Read(DataViewSchema schema, int count)
        {
            if (schema.GetColumnOrNull("Score") is not { } score) return Indices(count);
            foreach (var kind in new[] { "SlotNames", "TrainingLabelValues" })
            {
                if (score.Annotations.Schema.GetColumnOrNull(kind) is not { } column ||
                    column.Type is not VectorDataViewType { ItemType: TextDataViewType }) continue;
                VBuffer<ReadOnlyMemory<char>> names = default;
                score.Annotations.GetValue(kind, ref names);
                if (names.Length != count) continue;
                return names.DenseValues().Select((n, i) => n.IsEmpty ? i.ToString() : n.ToString()).ToArray();
            }
            return Indices(count);
        }

        private static string[] Indices(int count) => Enumerable.Range(0, count).Select(i => i.ToString()).ToArray();
    }

    /// <summary>
    /// The /healthz body: <c>Healthy</c>, or the status and why (<c>Degraded: model generation 1 serving; the newest
    /// model failed to load: ...</c>), in plain text.
    /// </summary>
    private static Task WriteHealth(HttpContext context, HealthReport report)
    {
        context.Response.ContentType = "text/plain; charset=utf-8";
        var why = report.Entries.Values.Where(e => e.Status != HealthStatus.Healthy && e.Description is not null).Select(e => e.Description);
        return context.Response.WriteAsync(report.Status == HealthStatus.Healthy ? "Healthy" : $"{report.Status}: {string.Join("; ", why)}");
    }

    /// <summary>
    /// Healthy while the newest model is loaded; Degraded, with the load error, while an older generation serves
    /// because the newest file could not be loaded (or was deleted); reports the serving generation.
    /// </summary>
    private sealed class ModelHealthCheck(PredictionEnginePool<TextInput, TextPrediction> pool) : IHealthCheck
    {
        public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
        {
            try
            {
                pool.GetModel();
                var generation = pool.GetModelGeneration();
                return Task.FromResult(pool.GetLastLoadError() is { } error
                    ? HealthCheckResult.Degraded($"model generation {generation} serving; the newest model failed to load: {error}")
                    : HealthCheckResult.Healthy($"model generation {generation}"));
            }
            catch (Exception ex)
            {
                return Task.FromResult(HealthCheckResult.Unhealthy("no model is loaded", ex));
            }
        }
    }

    /// <summary>
    /// A request whose body was still arriving when the server began to stop (SIGTERM): Kestrel cancels the body's read
    /// (an OperationCanceledException, else a 500 with its stack trace logged at Error). It was not classified, so
    /// sending it again is safe: 503.
    /// </summary>
    private sealed class ShutdownToProblemDetails(IProblemDetailsService problemDetails, IHostApplicationLifetime lifetime) : IExceptionHandler
    {
        public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
        {
            if (exception is not OperationCanceledException || !lifetime.ApplicationStopping.IsCancellationRequested) return false;
            return await WriteProblem(problemDetails, httpContext, exception, StatusCodes.Status503ServiceUnavailable, "The server is shutting down.",
                "The request's body was still arriving when the server began to stop; it was not classified: send it again.");
        }
    }

    /// <summary>Unreadable bodies (malformed JSON, wrong types, wrong content type) become 400 problem details that say why.</summary>
    private sealed class BadRequestToProblemDetails(IProblemDetailsService problemDetails) : IExceptionHandler
    {
        public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
        {
            if (exception is not BadHttpRequestException bad) return false;
            return await WriteProblem(problemDetails, httpContext, exception, bad.StatusCode, "The request body could not be read.", (bad.InnerException ?? bad).Message);
        }
    }

    /// <summary>Answers <paramref name="exception"/>'s request with <paramref name="status"/> and a problem detail saying why.</summary>
    private static ValueTask<bool> WriteProblem(IProblemDetailsService problemDetails, HttpContext httpContext, Exception exception, int status, string title, string detail)
    {
        httpContext.Response.StatusCode = status;
        return problemDetails.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = httpContext,
            Exception = exception,
            ProblemDetails = { Status = status, Title = title, Detail = detail },
        });
    }
}
