using RetriKT.Evaluation;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Text;
using static RetriKT.MLNet.Tests.Infrastructure.InvalidUtf8;

namespace RetriKT.MLNet.Tests.Data;

/// <summary>
/// The runtime's readers of files a user gives it (a WordPiece vocab.txt, a knowledge store's JSONL) and the harness's
/// teacher-pretraining corpora read a byte that is not UTF-8 as U+FFFD: a token, a stored text or a pretraining text
/// that was never in the file. Like the task readers (<see cref="TaskFileEncodingTests"/>), each now fails with one line
/// naming the file, the line and the byte, on real files with 0xFF on line 3; the same lines as UTF-8 load as before.
/// </summary>
public sealed class UserFileEncodingTests : IDisposable
{
    private readonly TempDir _folder = new("retrikt-user-encoding-");

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void AVocabularyWithAByteThatIsNotUtf8FailsNamingTheFileAndLine()
    {
        var path = _folder.File("vocab.txt");
        string[] tokens = ["[PAD]", "[UNK]", "caf\u00ff", "[CLS]", "[SEP]", "[MASK]", "the"];
        WriteWithInvalidByteOnLine3(path, tokens);
        Assert.Equal(Expected(path), Assert.Throws<InvalidDataException>(() => WordPieceVocabulary.Load(path)).Message);

        File.WriteAllLines(path, tokens);
        Assert.Equal("caf\u00ff", WordPieceVocabulary.Load(path).Tokens[2]);
    }

    [Fact]
    public void AStoreJsonlWithAByteThatIsNotUtf8FailsNamingTheFileAndLine()
    {
        var path = _folder.File("store.jsonl");
        string[] lines = ["{\"retrikt_store\": 1, \"labels\": [\"neg\", \"pos\"]}", "{\"text\": \"a fine latte\", \"label\": \"pos\"}", "{\"text\": \"the caf\u00ff was cold\", \"label\": \"neg\"}"];
        WriteWithInvalidByteOnLine3(path, lines);
        Assert.Equal(Expected(path), Assert.Throws<InvalidDataException>(() => KnowledgeStore.ImportJsonl(path)).Message);

        File.WriteAllLines(path, lines);
        Assert.Equal("the caf\u00ff was cold", KnowledgeStore.ImportJsonl(path).Entries[1].Text);
    }

    [Fact]
    public void ATeacherCorpusWithAByteThatIsNotUtf8FailsNamingTheFileAndLine()
    {
        // SST-2's stage-A corpora, under a --data folder of the user's.
        var corpora = Path.Combine(_folder.Path, "corpora");
        var good = Path.Combine(corpora, "movie-reviews-polarity-v2", "part-00000.txt");
        Directory.CreateDirectory(Path.GetDirectoryName(good)!);
        File.WriteAllLines(good, ["a warm and funny film", "the plot drags"]);
        var bad = Path.Combine(corpora, "imdb-unsup", "part-00000.txt");
        string[] lines = ["one of the best this year", "too long by an hour", "the caf\u00ff scene is a mess"];
        WriteWithInvalidByteOnLine3(bad, lines);
        Assert.Equal(Expected(bad), Assert.Throws<InvalidDataException>(() => TeacherBuilder.StageAText(_folder.Path, "SST-2", new TeacherSettings())).Message);

        File.WriteAllLines(bad, lines);
        Assert.Contains("the caf\u00ff scene is a mess", TeacherBuilder.StageAText(_folder.Path, "SST-2", new TeacherSettings()));
    }
}
