using System.Text.Json;
using System.Text.Json.Nodes;

namespace RetriKT.MLNet.Common;

/// <summary>The JSON configuration files read beside models (config.json, tokenizer_config.json, indexes …).</summary>
internal static class JsonFiles
{
    // A repeated key is refused as invalid JSON: by default System.Text.Json accepts it and the object then throws a bare
    // ArgumentException ("An item with the same key has already been added") at its first use, naming no file.
    private static readonly JsonDocumentOptions Strict = new() { AllowDuplicateProperties = false };

    /// <summary>
    /// The JSON object in <paramref name="path"/>; a file that is not valid JSON (a repeated key included), or holds
    /// something other than an object, fails with one line naming the file.
    /// </summary>
    public static JsonObject ReadObject(string path) => ParseObject(File.ReadAllText(path), path);

    /// <summary>
    /// The JSON array in <paramref name="path"/> (e.g. a sentence-transformers <c>modules.json</c>); anything else fails
    /// with one line naming the file.
    /// </summary>
    public static JsonArray ReadArray(string path)
    {
        var node = Parse(File.ReadAllText(path), path);
        return node as JsonArray ?? throw new InvalidDataException($"{path}: expected a JSON array, found {node?.GetValueKind().ToString() ?? "null"}.");
    }

    /// <summary>
    /// The JSON object in <paramref name="json"/> (a file's text or an embedded header); anything else, a repeated key
    /// included, fails with one line naming <paramref name="source"/>.
    /// </summary>
    public static JsonObject ParseObject(string json, string source)
    {
        var node = Parse(json, source);
        return node as JsonObject ?? throw new InvalidDataException($"{source}: expected a JSON object, found {node?.GetValueKind().ToString() ?? "null"}.");
    }

    private static JsonNode? Parse(string json, string source)
    {
        try { return JsonNode.Parse(json, documentOptions: Strict); }
        catch (JsonException e)
        {
            // System.Text.Json cuts a repeated key's name short ('bert.embeddings...'); name a top-level one in full.
            if (RepeatedTopLevelKey(json) is { } key) throw new InvalidDataException($"{source}: not valid JSON (key '{key}' appears twice).", e);
            throw new InvalidDataException($"{source}: not valid JSON ({e.Message}).", e);
        }
    }

    private static string? RepeatedTopLevelKey(string json)
    {
        try
        {
            using var document = JsonDocument.Parse(json); // the default options accept repeated keys
            if (document.RootElement.ValueKind != JsonValueKind.Object) return null;
            var seen = new HashSet<string>(StringComparer.Ordinal);
            return document.RootElement.EnumerateObject().Select(p => p.Name).FirstOrDefault(name => !seen.Add(name));
        }
        catch (JsonException) { return null; }
    }
}
