using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Mvc;

namespace RetriKT.WebApi;

/// <summary>Source-generated JSON for the API's contracts (camelCase on the wire).</summary>
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(PredictRequest))]
[JsonSerializable(typeof(PredictResponse))]
[JsonSerializable(typeof(ExplainResponse))]
[JsonSerializable(typeof(ProblemDetails))]
[JsonSerializable(typeof(HttpValidationProblemDetails))]
internal sealed partial class WebApiJsonContext : JsonSerializerContext;
