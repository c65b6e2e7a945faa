using System.Text.Json;
using System.Text.Json.Nodes;
using RetriKT.MLNet.Teacher;

namespace RetriKT.Evaluation;

/// <summary>
/// docs/evaluation/teachers.jsonl: one line per (task, teacher content hash) the results were made with, holding the
/// teacher's build record (recipe, corpus sizes, tokens seen, final losses) so the report can say what each teacher is
/// without the build cache.
/// </summary>
public static class TeacherRecords
{
    public static void Record(string path, string task, string teacherPath, TeacherModel teacher)
    {
        bool Same(JsonObject r) => r["task"]!.GetValue<string>() == task && r["contentHash"]!.GetValue<string>() == teacher.ContentHash;
        if (Read(path).Records.Any(Same)) return;
        var record = new JsonObject
        {
            ["task"] = task, ["contentHash"] = teacher.ContentHash, ["parameters"] = teacher.ParameterCount, ["config"] = teacher.Config.ToString(),
            ["source"] = Path.GetFileName(Path.TrimEndingDirectorySeparator(teacherPath)),
        };
        var done = Path.Combine(teacherPath, "done.json");
        if (File.Exists(done)) record["build"] = JsonNode.Parse(File.ReadAllText(done));
        // Checked again under the file's lock: two runs loading this teacher at once both found it missing above.
        JsonLines.AppendUnless(path, record.ToJsonString(), line =>
        {
            try { return Parse(line) is { } r && Same(r); }
            catch (JsonException) { return false; }
        });
    }

    /// <summary>The recorded teachers; a line that is not one (not a JSON object) is named in <see cref="JsonLinesContent{T}.Ignored"/>.</summary>
    public static JsonLinesContent<JsonObject> Read(string path) => JsonLines.Read(path, Parse,
        "a teacher record", "the report's teacher table leaves it out, and the teacher is recorded again when next loaded");

    /// <summary>One line's record; null for JSON null, a <see cref="JsonException"/> for a line that is not a teacher record.</summary>
    private static JsonObject? Parse(string line) => JsonNode.Parse(line) switch
    {
        null => null,
        // A JSON object of another shape (a result) was a teacher of task "?" and no hash in the report's teacher table.
        JsonObject o when o["task"]?.GetValueKind() != JsonValueKind.String || o["contentHash"]?.GetValueKind() != JsonValueKind.String
            => throw new JsonException("no task or no contentHash"),
        JsonObject o => o,
        var other => throw new JsonException($"expected a JSON object, found {other.GetValueKind()}"),
    };
}
