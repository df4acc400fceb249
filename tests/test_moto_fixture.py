import boto3
import s3fs


def test_s3fs_and_boto3_reach_the_moto_server(s3_bucket, aws_env):
    fs = s3fs.S3FileSystem()
    fs.pipe(f"{s3_bucket}/a/b.txt", b"hello")
    s3 = boto3.client("s3")
    body = s3.get_object(Bucket=s3_bucket, Key="a/b.txt")["Body"].read()
    assert body == b"hello"
    assert aws_env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
